"""The order benchmark runs at a small size: every line allocated, nothing held twice (no speed
asserts: the figures are printed by ``python -m floorsync.server.orderbench``)."""

from __future__ import annotations

from floorsync.server.orderbench import run


def test_order_benchmark_allocates_every_line_once() -> None:
    result = run(on_hand=4_000, per_item=10, lines=100, batches=4)
    assert result["order_lines"] == 100 and result["candidate_stock_lines"] == 1_000
    assert result["accept_backordered"] == 0 and result["allocate_short_lines"] == 0
    assert result["accept_allocated"] > 0 and result["allocate_allocated"] > 0
    assert result["over_allocated_lines"] == 0
    assert result["accept_s"] > 0 and result["raw_insert_s"] > 0
    assert result["apply_movements_per_s_with_hook"] > 0
    assert 0 <= result["apply_hook_share"] < 1
