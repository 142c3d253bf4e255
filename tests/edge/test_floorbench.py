"""The floor benchmark runs, and its door workload gives one movement per tag (no speed asserts)."""

from __future__ import annotations

from floorsync.edge.floorbench import bench_doors, bench_handheld


def test_door_benchmark_moves_every_tag_once() -> None:
    result = bench_doors(doors=2, pallets=2, tags=10)
    assert result["door_tags"] == 40
    assert result["door_movements"] == result["door_tags"]
    assert result["door_reads_per_s"] > 0


def test_handheld_benchmark_measures_every_scan() -> None:
    result = bench_handheld(scans=40, rate=1000.0)
    assert result["handheld_scans"] == 40
    assert 0 < result["handheld_p50_ms"] <= result["handheld_p99_ms"] <= result["handheld_max_ms"]
