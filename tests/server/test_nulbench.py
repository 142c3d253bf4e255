"""The NUL guard's benchmark runs, small, and reports every figure (no timing is asserted: the
numbers are for reading, ``python -m floorsync.server.nulbench``)."""

from __future__ import annotations

import math

from floorsync.server import nulbench


def test_the_benchmark_runs_small_and_reports_every_figure() -> None:
    result = nulbench.run(mib=0.2, runs=1, batches=3, rounds=2, calls=200)
    assert result["document_bytes"] > 150_000
    for key in ("json_loads_s", "scan_s", "scan_escapes_s", "escaped_text_s", "refusal_s",
                "middleware_bare_s", "middleware_guarded_s", "events_bare_s_per_batch",
                "events_guarded_s_per_batch", "small_body_bare_ns"):
        assert result[key] > 0, key
    for key in ("scan_vs_json_loads", "events_guarded_vs_bare", "guard_ns_per_request",
                "small_body_ns_added", "middleware_added_ms"):
        assert math.isfinite(result[key]), key


def test_the_document_is_of_the_size_asked() -> None:
    body = nulbench.order_document(1.0)
    assert 0.9 * 2**20 < len(body) < 1.1 * 2**20
    assert b"\\" not in body  # the clean fast path: no backslash at all
