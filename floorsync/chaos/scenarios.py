"""What a scenario is: the fault kinds each path can take, the named scenarios (a path and the
kinds its faults are drawn from), and what one scenario comes to (``Result``: faults by kind,
generated, applied, lost, doubled, unconfirmed, wrong).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HANDHELD_KINDS = ("kill-edge", "kill-central", "kill-broker", "broker-amnesia", "disk-full",
                  "clock-back", "flood", "stall")
DOCK_KINDS = (*HANDHELD_KINDS, "kill-reader-broker")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # handheld | dock
    kinds: tuple[str, ...]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("handheld-crash", "handheld",
             ("kill-edge", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("handheld-disk", "handheld", ("disk-full", "kill-edge")),
    Scenario("handheld-clock", "handheld", ("clock-back", "kill-edge", "kill-central")),
    Scenario("handheld-flood", "handheld", ("flood", "kill-central", "kill-broker")),
    Scenario("handheld-stall", "handheld", ("stall", "kill-broker", "flood")),
    Scenario("handheld-mixed", "handheld", HANDHELD_KINDS),
    Scenario("dock-crash", "dock",
             ("kill-edge", "kill-reader-broker", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("dock-brokers", "dock",
             ("kill-reader-broker", "kill-central", "kill-broker", "broker-amnesia")),
    Scenario("dock-disk", "dock", ("disk-full", "kill-reader-broker")),
    Scenario("dock-clock", "dock", ("clock-back", "kill-central", "kill-broker")),
    Scenario("dock-flood", "dock", ("flood", "kill-central", "kill-reader-broker")),
    Scenario("dock-stall", "dock", ("stall", "flood", "kill-broker")),
    Scenario("dock-edge", "dock", HANDHELD_KINDS),  # every fault but the reader's broker
    Scenario("dock-mixed", "dock", DOCK_KINDS),
)}


@dataclass
class Result:
    scenario: str
    path: str
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    generated: int = 0
    applied: int = 0
    lost: int = 0
    doubled: int = 0
    unconfirmed: int = 0  # handheld labels the edge never answered (killed mid-scan)
    wrong: int = 0  # events of generated items other than the expected movement
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    recovery: list[dict[str, Any]] = field(default_factory=list)  # cluster: per fault, times

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong == 0 and self.generated > 0

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "path": self.path, "seed": self.seed,
                "faults": self.injected, "by_kind": dict(self.faults),
                "generated": self.generated, "applied": self.applied, "lost": self.lost,
                "doubled": self.doubled, "unconfirmed": self.unconfirmed, "wrong": self.wrong,
                "wall_s": round(self.wall_s, 1), "notes": self.notes, "examples": self.examples,
                **({"recovery": self.recovery} if self.recovery else {})}
