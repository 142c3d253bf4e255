"""The receipt benchmark runs at a small size and does what it says (no speed asserts)."""

from __future__ import annotations

from floorsync.server.receiptbench import run


def test_receipt_benchmark_accepts_whole_receipts_and_applies_its_batches() -> None:
    result = run(lines=300, items=600, runs=2, batches=2)
    assert result["lines"] == 300 and result["items_in_master_data"] == 600
    assert 0 < result["accept_median_s"] <= result["accept_max_s"]
    assert 0 < result["http_median_s"] <= result["http_max_s"]
    assert result["raw_sqlite_median_s"] > 0 and result["accept_vs_raw"] > 0
    assert result["apply_with_receipt_events_per_s"] > 0
    assert result["apply_without_doc_events_per_s"] > 0
    # every receive is of an item on the receipt: some lines go over, nothing else
    assert set(result["exceptions_raised"]) <= {"receipt_over"}
