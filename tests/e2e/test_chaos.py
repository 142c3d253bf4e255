"""A short seeded run of the fault campaign (``floorsync chaos``; ``make chaos`` is the full one).

Real processes throughout: mosquitto brokers, ``floorsync server``, ``floorsync edge``, a serial
scanner on a pty and a network RFID reader on its own broker. Faults of every kind on both paths;
nothing generated may be lost or applied twice. Faults that cannot run here (a tmpfs needs root,
a clock jump needs libfaketime) are skipped with a printed reason, never silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.chaos import HEADER, SCENARIOS, Result, _line, run_campaign

pytestmark = pytest.mark.slow

SEED = 20261206


def _report(results: list[Result]) -> str:
    return "\n".join([HEADER, *(_line(r) for r in results)]
                     + [f"{r.scenario}: {note}" for r in results for note in r.notes]
                     + [f"{r.scenario} {what}: {examples}" for r in results
                        for what, examples in r.examples.items()])


def test_handheld_short_campaign_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    """Every fault kind of the handheld path: no loss, no double, ever."""
    status, results = run_campaign(seed=SEED, faults=12, scenarios=["handheld-mixed"],
                                   data=tmp_path)
    report = _report(results)
    print(report)
    (r,) = results
    assert r.injected >= 12 and r.generated > 0, report
    assert status == 0, f"logs in {tmp_path}\n{report}"


@pytest.mark.parametrize(("scenario", "faults"), [("dock-edge", 8), ("dock-brokers", 4)])
def test_dock_short_campaign_loses_nothing_and_doubles_nothing(
    tmp_path: Path, scenario: str, faults: int
) -> None:
    """Every fault kind of the dock path; the reader-side broker's kills apart."""
    status, results = run_campaign(seed=SEED, faults=faults, scenarios=[scenario],
                                   data=tmp_path)
    report = _report(results)
    print(report)
    (r,) = results
    assert r.injected >= faults and r.generated > 0, report
    assert status == 0, f"logs in {tmp_path}\n{report}"


def test_every_scenario_names_known_faults() -> None:
    kinds = {"kill-edge", "kill-central", "kill-broker", "kill-reader-broker", "broker-amnesia",
             "disk-full", "clock-back", "flood", "stall"}
    for scenario in SCENARIOS.values():
        assert scenario.path in ("handheld", "dock")
        assert set(scenario.kinds) <= kinds
        assert scenario.path == "dock" or "kill-reader-broker" not in scenario.kinds
    covered = {k for s in SCENARIOS.values() for k in s.kinds}
    assert covered == kinds
