"""The EPCIS export benchmark runs at a small size; every event reaches the HTTP client (no
speed asserts: the figures are for the README, measured with ``python -m``)."""

from __future__ import annotations

from floorsync.server.epcisbench import run_epcis_export


def test_export_benchmark_counts_every_event() -> None:
    result = run_epcis_export(events=2_000, small=500)
    assert result["events"] == 2_000
    for key in ("raw_select_json_events_per_s", "generator_events_per_s", "http_events_per_s",
                "peak_kb_500", "peak_kb_2000", "http_server_peak_kb_2000",
                "generator_urn_events_per_s", "capture_events_per_s",
                "captured_export_events_per_s"):
        assert result[key] > 0, key
    assert result["document_mb"] > 0.5  # ~450 bytes an event: the events were written
    assert result["captured_events"] == 2_000
