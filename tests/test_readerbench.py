"""The reader-path benchmark runs end to end on a small load (no speed asserts): every tag of
the flood becomes one movement in the edge's outbox, and every live tag gets a latency."""

from __future__ import annotations

import pytest

from floorsync.bench.reader import run

pytestmark = pytest.mark.slow


def test_reader_benchmark_moves_every_tag_once() -> None:
    result = run(reads=2000, per_tag=4, rate=400.0, seconds=1.0)
    assert result["movements"] == 500
    assert result["edge_reads_per_s"] > 0 and result["raw_paho_reads_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
