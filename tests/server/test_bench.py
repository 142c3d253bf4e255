"""The ledger benchmark runs at a small size and applies every event once (no speed asserts)."""

from __future__ import annotations

from floorsync.server.bench import run


def test_ledger_benchmark_applies_every_event() -> None:
    result = run(on_hand=5_000, batches=2, lookups=20)
    assert result["events_applied"] == 1_000
    assert result["movements_per_s"] > 0 and result["raw_sqlite_upserts_per_s"] > 0
    assert 0 < result["stock_one_item_p50_ms"] <= result["stock_one_item_p99_ms"]
    assert 0 < result["stock_http_p50_ms"] <= result["stock_http_p99_ms"]
    assert 0 < result["health_http_p50_ms"] <= result["health_http_p99_ms"]
