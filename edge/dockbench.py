"""``floorsync bench direction``: how many tag crossings a door gets right, on generated traffic.

The traffic comes from ``devices.docksim`` (dock doors with dead zones, stop-and-go, back-outs,
staged pallets, trains of pallets, a neighbouring door; ground truth per tag). Each scenario is
played through real ``Door`` objects with the documented defaults (only name, location and
the antenna map set, as a user would), sharing a ``DoorArbiter`` when the scenario has two
doors, advanced as the agent advances them. A tag is right when the movements made for it
(receive / ship, at whichever door) are exactly its ground truth: one movement at the right
door, or none at all. Each movement's latency is how long after its tag's last read (in
event time) the door gave it out.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from floorsync.devices.base import TagRead
from floorsync.devices.docksim import KINDS, DockSim, Scenario
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter
from floorsync.edge.config import PortalConfig
from floorsync.edge.portal import Door

ANTENNAS = {"1": "outside", "2": "inside"}


def door_config(name: str, **overrides: Any) -> PortalConfig:
    """A door as a user configures one: name, location, antennas; everything else default."""
    return PortalConfig(name=name, location=f"DOCK-{name[-1].upper()}", antennas=ANTENNAS,
                        **overrides)


@dataclass
class Score:
    tags: Counter[str] = field(default_factory=Counter)  # per kind
    right: Counter[str] = field(default_factory=Counter)
    wrong: list[tuple[str, str, bool, str | None, tuple[tuple[str, str], ...]]] = field(
        default_factory=list)  # kind, role, buried, truth, what was made
    reads: int = 0
    delays: list[float] = field(default_factory=list)  # per movement: seconds after last read

    def add(self, other: Score) -> None:
        self.tags.update(other.tags)
        self.right.update(other.right)
        self.wrong += other.wrong
        self.reads += other.reads
        self.delays += other.delays

    def delay(self, q: float) -> float:
        """The ``q`` quantile (0-1) of the movements' latency after their last read."""
        if not self.delays:
            return 0.0
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def total(self) -> float:
        n = sum(self.tags.values())
        return sum(self.right.values()) / n if n else 1.0

    def accuracy(self, kind: str) -> float:
        return self.right[kind] / self.tags[kind] if self.tags[kind] else 1.0


def play(scenario: Scenario, make_door: Callable[[str], PortalConfig] = door_config,
         tick_s: float = 0.25, tail_s: float = 30.0) -> list[wire.Event]:
    """The events the doors make of a scenario's reads, advanced every ``tick_s`` of event time
    (each read delivered once its time has come), then ``tail_s`` more, then finished."""
    return [e for _, e in play_timed(scenario, make_door, tick_s, tail_s)]


def play_timed(scenario: Scenario, make_door: Callable[[str], PortalConfig] = door_config,
               tick_s: float = 0.25, tail_s: float = 30.0) -> list[tuple[datetime, wire.Event]]:
    """``play``, each event with the watermark at which the door gave it out."""
    configs = [make_door(name) for name in scenario.doors]
    arbiter = DoorArbiter.for_portals(configs) if len(configs) > 1 else None
    doors = {c.name: Door(c, arbiter=arbiter) for c in configs}
    reads: list[TagRead] = sorted((r for rs in scenario.reads.values() for r in rs),
                                  key=lambda r: r.at)
    events: list[tuple[datetime, wire.Event]] = []
    now = scenario.start
    stop = scenario.end + timedelta(seconds=tail_s)
    step = timedelta(seconds=tick_s)
    i = 0
    while now <= stop:
        while i < len(reads) and reads[i].at <= now:
            doors[reads[i].reader].add(reads[i])
            i += 1
        for d in doors.values():
            events += [(now, e) for e in d.advance(now)]
        now += step
    for r in reads[i:]:
        doors[r.reader].add(r)
    for d in doors.values():
        events += [(now, e) for e in d.finish()]
    return events


def score(scenarios: Iterable[Scenario], make_door: Callable[[str], PortalConfig] = door_config,
          tick_s: float = 0.25) -> Score:
    out = Score()
    for sc in scenarios:
        location_door = {make_door(name).location: name for name in sc.doors}
        made: dict[str, list[tuple[str, str]]] = {}
        for given, e in play_timed(sc, make_door, tick_s):
            if e.type in ("receive", "ship") and e.read is not None and e.read.tag:
                where = e.to if e.type == "receive" else e.from_
                made.setdefault(e.read.tag, []).append((location_door.get(where or "", "?"),
                                                        e.type))
                if e.read.last:
                    last = datetime.fromisoformat(e.read.last)
                    out.delays.append((given - last).total_seconds())
        out.reads += sc.read_count
        for t in sc.truth:
            want = [(t.door, t.movement)] if t.movement else []
            got = sorted(made.get(t.tag, []))
            out.tags[sc.kind] += 1
            if got == want:
                out.right[sc.kind] += 1
            else:
                out.wrong.append((sc.kind, t.role, t.buried, t.movement, tuple(got)))
    return out


def run(scenarios: int = 450, seed: int = 1) -> dict[str, float | None]:
    """Accuracy per scenario kind and in total, with the documented defaults."""
    started = time.perf_counter()
    sim = DockSim(seed)
    result = score(sim.traffic(scenarios))
    out: dict[str, float | None] = {}
    for kind in KINDS:
        out[f"{kind} %"] = round(100.0 * result.accuracy(kind), 2)
    out["tag crossings"] = float(sum(result.tags.values()))
    out["right %"] = round(100.0 * result.total, 2)
    out["reads"] = float(result.reads)
    # how long after a tag's last read its movement was given out (event time; the bench
    # advances the doors every 0.25 s)
    out["latency p50 s"] = round(result.delay(0.5), 2)
    out["latency p90 s"] = round(result.delay(0.9), 2)
    out["latency p99 s"] = round(result.delay(0.99), 2)
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out
