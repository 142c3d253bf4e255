"""The backlog-drain benchmark runs end to end on a small backlog (no speed asserts): a real
mosquitto, the central service as its own process, every backlog and live event applied once,
and the figures the README quotes are all there."""

from __future__ import annotations

import pytest

from floorsync.bench.drain import run, summarize_rss

pytestmark = pytest.mark.slow


def test_drain_bench_applies_every_event_once_and_prints_its_figures() -> None:
    result = run(backlog=2000, live_rate=20.0)
    assert result["backlog"] == 2000
    assert result["live_events"] >= 1  # the first live scan is kept before the drain is timed
    assert result["central_applied"] == result["central_applied_expected"] == 2000 + result[
        "live_events"] + result["neighbour_events"]
    assert result["central_missing_seqs"] == 0 and result["central_duplicate_seqs"] == 0
    assert result["count_ok"] is True
    assert result["fill_s"] > 0 and result["drain_events_per_s"] > 0
    assert result["raw_mqtt_events_per_s"] > 0
    assert 0 < result["live_p50_ms"] <= result["live_p99_ms"] <= result["live_max_ms"]
    assert 0 < result["live_capture_p50_ms"] <= result["live_capture_p99_ms"]
    assert result["neighbour_events"] >= 1  # another device scanning, counted centrally too
    assert 0 < result["neighbour_p50_ms"] <= result["neighbour_p99_ms"] <= result[
        "neighbour_max_ms"]
    for side in ("edge_rss", "central_rss"):
        rss = result[side]
        assert rss["samples"] >= 1
        assert 0 < rss["min_mib"] <= rss["median_mib"] <= rss["max_mib"]
        assert rss["first_10pct_median_mib"] > 0 and rss["last_10pct_median_mib"] > 0


def test_rss_summary_shows_growth_between_the_first_and_last_tenth() -> None:
    samples = [100 * 1024] * 10 + [150 * 1024] * 80 + [200 * 1024] * 10
    rss = summarize_rss(samples)
    assert rss == {"samples": 100, "min_mib": 100.0, "median_mib": 150.0, "max_mib": 200.0,
                   "first_10pct_median_mib": 100.0, "last_10pct_median_mib": 200.0}
    assert summarize_rss([]) == {}
