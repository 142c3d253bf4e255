"""RFID dock doors, scripted: pallets, forklifts, neighbouring doors, disconnects, photo eyes.

``Floor`` builds tag reads with controlled antennas, times and strength (tags from devices.sim);
``run`` plays them to doors the way the agent does: each read delivered when its time comes,
every door advanced each tick, a reader that is offline delivering its backlog in a burst when
it comes back while its door is not advanced.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from floorsync.devices.base import TagRead
from floorsync.devices.sim import ScriptedPortal, sgtin96_hex, sscc96_hex
from floorsync.edge import wire
from floorsync.edge.arbiter import DoorArbiter
from floorsync.edge.config import PortalConfig
from floorsync.edge.doorcycles import CycleReport
from floorsync.edge.portal import Door
from floorsync.edge.readerclock import ReaderClock

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
SIDES = {"1": "outside", "2": "inside"}
OUT, IN = 1, 2
GTIN = "80614141123458"


def case(n: int) -> str:
    return sgtin96_hex("0614141", "812345", n)


def pallet(n: int, first: int = 1) -> list[str]:
    return [case(first + i) for i in range(n)]


def door(name: str, location: str, **kwargs: Any) -> PortalConfig:
    values: dict[str, Any] = {"antennas": SIDES, "include": ("0614141",), "quiet_s": 1.0,
                              "min_reads": 3, "arbitration_s": 2.0}
    values.update(kwargs)
    config = PortalConfig(name=name, location=location, **values)
    config.check()
    return config


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Gpi:
    door: str
    input: int
    state: bool
    at: datetime


class Floor:
    """Scripted reads for one or more doors (reader name = door name)."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.reads: list[TagRead] = []
        self.gpis: list[Gpi] = []

    def sweep(self, reader: str, tag: str, antenna: int, start: float, end: float, *,
              every: float = 0.05, rssi: float = -55.0) -> None:
        """The antenna reads the tag about every ``every`` seconds from ``start`` to ``end``."""
        t = start
        while t <= end:
            strength = round(self.rng.gauss(rssi, 1.5) * 2) / 2
            self.reads.append(TagRead(reader, tag, antenna, strength, at(t)))
            t += every * self.rng.uniform(0.6, 1.4)

    def through(self, reader: str, tags: Iterable[str], start: float, path: Sequence[int], *,
                segment: float = 0.8, overlap: float = 0.25, rssi: float = -55.0,
                every: float = 0.05) -> None:
        """Tags carried past the antennas in ``path`` order (OUT, IN: inbound), each segment
        overlapping the next, the tags of a pallet a little apart."""
        for tag in tags:
            t = start + self.rng.uniform(0.0, 0.3)
            for antenna in path:
                self.sweep(reader, tag, antenna, t, t + segment, every=every, rssi=rssi)
                t += segment - overlap

    def glimpse(self, reader: str, tag: str, antenna: int, when: float, n: int = 1,
                rssi: float = -76.0) -> None:
        for i in range(n):
            self.reads.append(TagRead(reader, tag, antenna, rssi, at(when + 0.03 * i)))

    def photo_eye(self, reader: str, on: float, off: float, input: int = 1) -> None:
        self.gpis.append(Gpi(reader, input, True, at(on)))
        self.gpis.append(Gpi(reader, input, False, at(off)))


@dataclass
class Run:
    events: list[wire.Event]
    reports: list[CycleReport]

    def of(self, door_name: str, kind: str | None = None) -> list[wire.Event]:
        location = {"door-a": "DOCK-A", "door-b": "DOCK-B"}.get(door_name, door_name)
        return [e for e in self.events if location in (e.to, e.from_)
                and (kind is None or e.type == kind)]

    def serials(self, kind: str, location: str) -> list[str]:
        return sorted(str(e.item.serial) for e in self.events  # type: ignore[union-attr]
                      if e.type == kind and location in (e.to, e.from_))


def run(doors: Sequence[Door], floor: Floor, until: float, *, tick: float = 0.1,
        offline: dict[str, tuple[float, float]] | None = None) -> Run:
    offline = offline or {}

    def arrival(reader: str, when: datetime) -> float:
        t = (when - T0).total_seconds()
        gone = offline.get(reader)
        return gone[1] if gone and gone[0] <= t < gone[1] else t

    inputs: list[tuple[float, int, TagRead | Gpi]] = [
        (arrival(r.reader, r.at), i, r) for i, r in enumerate(floor.reads)]
    inputs += [(arrival(g.door, g.at), len(inputs) + i, g) for i, g in enumerate(floor.gpis)]
    inputs.sort(key=lambda x: (x[0], x[1]))
    by_name = {d.name: d for d in doors}
    events: list[wire.Event] = []
    reports: list[CycleReport] = []
    pos = 0
    for k in range(round(until / tick) + 1):
        t = k * tick
        while pos < len(inputs) and inputs[pos][0] <= t + 1e-9:
            thing = inputs[pos][2]
            if isinstance(thing, TagRead):
                by_name[thing.reader].add(thing)
            else:
                by_name[thing.door].gpi(thing.input, thing.state, thing.at)
            pos += 1
        for d in doors:
            gone = offline.get(d.name)
            if gone and gone[0] <= t < gone[1]:
                continue  # the agent holds an offline reader's watermark
            events += d.advance(at(t))
            reports += d.take_reports()
    for d in doors:
        events += d.finish()
        reports += d.take_reports()
    return Run(events, reports)


def two_doors(**kwargs: Any) -> tuple[Door, Door]:
    a, b = door("door-a", "DOCK-A", **kwargs), door("door-b", "DOCK-B", **kwargs)
    arbiter = DoorArbiter.for_portals([a, b])
    return Door(a, arbiter=arbiter), Door(b, arbiter=arbiter)


def valid(event: wire.Event) -> None:
    """The contract accepts the event once the outbox has numbered it."""
    wire.event_from_dict(wire.event_to_dict(replace(event, seq=1)))


def without_ids(events: list[wire.Event]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        d = wire.event_to_dict(e)
        del d["id"]
        out.append(d)
    return out


# --- the scenarios ------------------------------------------------------------------------


def test_a_pallet_of_60_cases_inbound_is_60_receives_at_that_door() -> None:
    a, b = two_doors()
    floor = Floor()
    floor.through("door-a", pallet(60), 1.0, (OUT, IN))
    result = run([a, b], floor, until=10)
    assert len(result.events) == 60
    assert {(e.type, e.to, e.from_, e.qty) for e in result.events} == {("receive", "DOCK-A",
                                                                         None, 1)}
    assert result.serials("receive", "DOCK-A") == sorted(str(n) for n in range(1, 61))
    e = result.events[0]
    assert e.item is not None and e.item.gtin == GTIN and e.item.epc is not None
    assert e.read is not None and e.read.kind == "rfid" and e.read.tag in pallet(60)
    assert e.read.reads is not None and e.read.reads > 10 and e.read.antenna in (1, 2)
    assert e.read.first is not None and e.read.last is not None and e.read.first < e.read.last
    assert e.time == e.read.first
    valid(e)
    cycles = [r for r in result.reports if r.door == "door-a" and r.tags]
    assert sum(r.events for r in result.reports if r.door == "door-a") == 60
    assert max(r.per_gtin.get(GTIN, 0) for r in cycles) >= 30
    assert all(r.stray == 0 for r in result.reports)


def test_the_same_pallet_outbound_is_60_ships() -> None:
    a, b = two_doors()
    floor = Floor()
    floor.through("door-a", pallet(60), 1.0, (IN, OUT))
    result = run([a, b], floor, until=10)
    assert len(result.events) == 60
    assert {(e.type, e.from_, e.to) for e in result.events} == {("ship", "DOCK-A", None)}


def test_a_forklift_that_enters_and_backs_out_moves_nothing() -> None:
    a, b = two_doors()
    floor = Floor()
    floor.through("door-a", pallet(12), 1.0, (OUT, IN, OUT))
    floor.through("door-b", pallet(12, first=100), 1.0, (IN, OUT, IN))  # pulled back inside
    result = run([a, b], floor, until=10)
    assert result.events == []
    assert sum(r.unmoved for r in result.reports) == 24
    assert sum(r.tags for r in result.reports if r.door == "door-a") >= 12


def test_backing_out_can_be_reported_as_observations() -> None:
    config = door("door-a", "DOCK-A", unmoved="observe")
    floor = Floor()
    floor.through("door-a", pallet(3), 1.0, (OUT, IN, OUT))
    floor.through("door-a", pallet(2, first=50), 1.0, (OUT,))  # one side only
    result = run([Door(config)], floor, until=8)
    assert [e.type for e in result.events] == ["observe"] * 5
    assert {e.to for e in result.events} == {"DOCK-A"}


def test_stray_reads_at_the_next_door_leave_every_movement_at_the_right_door() -> None:
    a, b = two_doors()
    floor = Floor()
    tags = pallet(60)
    floor.through("door-a", tags, 1.0, (OUT, IN))
    rng = random.Random(3)
    for tag in tags[:40]:  # door B's antennas catch some of them, weakly, once or twice
        floor.glimpse("door-b", tag, rng.choice((1, 2)), 1.0 + rng.uniform(0, 1.5),
                      n=rng.randint(1, 2))
    for tag in tags[40:50]:  # and a few more often, still weak, on one side
        floor.sweep("door-b", tag, 2, 1.5, 1.8, every=0.08, rssi=-74.0)
    result = run([a, b], floor, until=10)
    assert len(result.events) == 60
    assert {(e.type, e.to) for e in result.events} == {("receive", "DOCK-A")}
    b_reports = [r for r in result.reports if r.door == "door-b"]
    assert sum(r.glimpsed for r in b_reports) >= 30
    assert sum(r.stray for r in b_reports) == 10  # observed at B, lost to A's stronger reads


def test_a_tag_read_at_two_doors_counts_where_it_was_read_stronger() -> None:
    a, b = two_doors()
    floor = Floor()
    x, y = case(1), case(2)
    floor.through("door-a", [x], 1.0, (OUT, IN), rssi=-50.0)  # x: close to A ...
    floor.through("door-b", [x], 1.2, (OUT, IN), rssi=-66.0)  # ... heard at B too
    floor.through("door-a", [y], 2.0, (IN, OUT), rssi=-68.0)  # y: heard at A ...
    floor.through("door-b", [y], 2.1, (IN, OUT), rssi=-49.0)  # ... shipped through B
    result = run([a, b], floor, until=12)
    assert [(e.type, e.item.serial, e.to or e.from_) for e in result.events] == [  # type: ignore[union-attr]
        ("receive", "1", "DOCK-A"), ("ship", "2", "DOCK-B")]
    assert sum(r.stray for r in result.reports if r.door == "door-a") == 1
    assert sum(r.stray for r in result.reports if r.door == "door-b") == 1


def test_a_reader_backlog_flushed_after_a_disconnect_gives_what_the_live_stream_gave() -> None:
    def scene() -> Floor:
        floor = Floor(seed=11)
        floor.through("door-a", pallet(30), 1.0, (OUT, IN))
        floor.through("door-a", pallet(10, first=200), 4.0, (IN, OUT))
        floor.through("door-a", pallet(5, first=300), 6.0, (OUT, IN, OUT))
        floor.through("door-b", pallet(8, first=400), 2.0, (OUT, IN))
        return floor

    live = run(two_doors(), scene(), until=20)
    # door A's reader drops off the network at 0.5 s and flushes its buffer at 9 s
    late = run(two_doors(), scene(), until=20, offline={"door-a": (0.5, 9.0)})
    assert len(live.events) == 48
    assert sorted(map(str, without_ids(late.events))) == sorted(map(str, without_ids(live.events)))
    assert sum(r.late for r in late.reports) == 0


def test_a_photo_eye_opens_and_closes_the_cycle() -> None:
    config = door("door-a", "DOCK-A", gpi=1, stable_s=1.5)
    d = Door(config)
    floor = Floor()
    floor.sweep("door-a", case(900), 2, 0.0, 0.8)  # a staged pallet read before the cycle
    floor.photo_eye("door-a", on=1.0, off=3.0)
    floor.through("door-a", pallet(20), 1.1, (OUT, IN))
    floor.photo_eye("door-a", on=3.05, off=3.2, input=2)  # another input: not ours
    floor.sweep("door-a", case(901), 2, 6.0, 7.0)  # after the cycle closed
    result = run([d], floor, until=12)
    assert len(result.events) == 20 and {e.type for e in result.events} == {"receive"}
    (report,) = result.reports
    assert report.tags == 20 and report.per_gtin == {GTIN: 20}
    assert report.opened == at(1.0)
    last_read = max(r.at for r in floor.reads if r.epc in pallet(20))
    assert last_read < at(3.0) and report.closed == at(3.0 + 1.5)  # trigger off + stable_s
    assert d.outside_reads > 20  # the staged pallet and the late tag: no cycle open


def test_a_tag_observed_after_the_photo_eye_clears_keeps_the_cycle_open() -> None:
    config = door("door-a", "DOCK-A", gpi=1, stable_s=1.0)
    floor = Floor()
    floor.photo_eye("door-a", on=1.0, off=1.5)
    floor.through("door-a", pallet(3), 1.1, (OUT, IN))
    floor.through("door-a", [case(9)], 2.2, (OUT, IN))  # the last case, straggling
    result = run([Door(config)], floor, until=10)
    assert result.serials("receive", "DOCK-A") == ["1", "2", "3", "9"]
    (report,) = result.reports
    first_reads = sorted(r.at for r in floor.reads if r.epc == case(9))
    assert report.closed == first_reads[2] + timedelta(seconds=1.0)  # observed at its 3rd read


def test_a_photo_eye_cycle_ends_passes_of_a_pallet_left_in_the_door() -> None:
    config = door("door-a", "DOCK-A", gpi=1, stable_s=1.0, quiet_s=5.0)
    floor = Floor()
    floor.photo_eye("door-a", on=1.0, off=2.5)
    floor.through("door-a", pallet(4), 1.1, (OUT, IN))
    floor.sweep("door-a", case(77), 1, 1.2, 9.0)  # stays in front of the outside antenna
    result = run([Door(config)], floor, until=12)
    assert result.serials("receive", "DOCK-A") == ["1", "2", "3", "4"]
    (report,) = result.reports
    assert report.tags == 5 and report.unmoved == 1


def test_count_mode_makes_one_count_event_per_cycle_with_the_full_set() -> None:
    sscc = sscc96_hex("0614141", "1234567890")
    reference = "3214257BF400020000000000"  # the location's own SGLN tag
    config = PortalConfig(name="shelf-1", location="A-01-02", mode="count", cycle_s=5.0,
                          exclude=("urn:epc:id:sgln:0614141.00001.*",))
    config.check()
    floor = Floor()
    for tag in [*pallet(7), sscc]:
        floor.sweep("shelf-1", tag, 1, 0.2, 4.5, every=0.4)
    floor.sweep("shelf-1", reference, 1, 0.0, 14.0, every=0.5)
    floor.glimpse("shelf-1", case(99), 1, 2.0)  # one read: a glimpse, not counted
    floor.sweep("shelf-1", "E2801160600002054E3A1B2C", 1, 1.0, 2.0, every=0.3)  # no EPC header
    result = run([Door(config)], floor, until=16)
    counts = [e for e in result.events if e.type == "count"]
    assert len(result.events) == len(counts) == 3  # cycles 0-5, 5-10, 10-15 (reference tag)
    first = counts[0]
    assert first.count is not None and first.count.location == "A-01-02"
    assert [line.qty for line in first.count.seen] == [1] * 8
    items = {line.item for line in first.count.seen}
    assert wire.Item(gtin=GTIN, serial="3", epc="urn:epc:id:sgtin:0614141.812345.3") in items
    assert wire.Item(sscc="106141412345678908", epc="urn:epc:id:sscc:0614141.1234567890") in items
    assert [len(c.count.seen) for c in counts[1:]] == [0, 0]  # type: ignore[union-attr]
    valid(first)
    report = result.reports[0]
    assert (report.tags, report.per_sscc, report.excluded, report.glimpsed, report.unknown) == (
        8, {"106141412345678908": 1}, 1, 1, 1)


def test_the_same_stream_twice_gives_the_same_events() -> None:
    def scene() -> Floor:
        floor = Floor(seed=5)
        floor.through("door-a", pallet(25), 0.5, (OUT, IN))
        floor.through("door-b", pallet(25, first=100), 0.7, (IN, OUT))
        floor.through("door-a", pallet(5, first=200), 3.0, (OUT, IN, OUT))
        floor.through("door-b", [case(1)], 0.9, (OUT, IN), rssi=-65.0)
        for n in range(30):
            floor.glimpse("door-b", case(n + 1), 1, 1.0 + n * 0.03)
        return floor

    first = run(two_doors(), scene(), until=15)
    again = run(two_doors(), scene(), until=15)
    assert without_ids(first.events) == without_ids(again.events)
    assert first.reports == again.reports
    slower = run(two_doors(), scene(), until=15, tick=0.37)  # another advance cadence:
    for name in ("door-a", "door-b"):  # each door says the same, in the same order
        assert without_ids(slower.of(name)) == without_ids(first.of(name))
    assert len(first.events) == 50


def test_the_device_simulator_through_a_door_with_a_fixed_direction() -> None:
    portal = ScriptedPortal("door-a", rng_seed=4)
    tags = [*pallet(12), sscc96_hex("0614141", "1234567890")]
    floor = Floor()
    floor.reads = portal.pallet_pass(tags, at(1.0), antennas=(1,))
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="out")
    result = run([Door(config)], floor, until=8)
    assert len(result.events) == 13 and {e.type for e in result.events} == {"ship"}
    (report,) = [r for r in result.reports if r.tags]
    assert report.per_sscc == {"106141412345678908": 1} and report.per_gtin == {GTIN: 12}


def _agent_loop(config: PortalConfig, reads: Sequence[TagRead], arrivals: Sequence[float], *,
                online_at: float = 0.0, until: float = 40.0) -> list[wire.Event]:
    """The agent's door thread in simulated host time: read ``i`` reaches the agent at host
    time ``arrivals[i]``; a tick every 0.1 s advances the door to the ``ReaderClock``."""
    d = Door(config)
    clock = ReaderClock(config.latency_s)
    clock.online(online_at)
    events: list[wire.Event] = []
    order = sorted(range(len(reads)), key=lambda i: arrivals[i])
    pos = 0
    for k in range(round(online_at * 10), round(until * 10) + 1):
        host = k / 10
        while pos < len(order) and arrivals[order[pos]] <= host + 1e-9:
            read = reads[order[pos]]
            clock.seen(read.at, host)
            d.add(read)
            pos += 1
        mark = clock.watermark(at(host), host)
        if mark is not None:
            events += d.advance(mark)
    return events + d.finish()


def test_the_watermark_follows_the_reader_clock_so_a_slow_backlog_or_clock_splits_no_pass() -> None:
    config = door("door-a", "DOCK-A", min_reads=2, arbitration_s=0.0)
    reads = [TagRead("door-a", case(7), OUT, -50.0, at(10 + k / 10)) for k in range(10)]
    reads += [TagRead("door-a", case(7), IN, -50.0, at(11 + k / 10)) for k in range(10)]
    live = _agent_loop(config, reads, [(r.at - T0).total_seconds() for r in reads])
    assert [e.type for e in live] == ["receive"]
    # back online at 30 s, the backlog flushed ten reads a tick from the second tick on
    flushed = _agent_loop(config, reads, [30.1 + (i // 10) / 10 for i in range(20)],
                          online_at=30.0)
    # a reader clock 2 s behind the host
    slow = _agent_loop(config, reads, [(r.at - T0).total_seconds() + 2.0 for r in reads])
    for events in (flushed, slow):
        assert without_ids(events) == without_ids(live)


def test_arbitration_does_not_depend_on_how_far_the_watermark_moves() -> None:
    a, b = door("door-a", "DOCK-A", direction="in"), door("door-b", "DOCK-B", direction="in")
    floor = Floor()
    floor.sweep("door-a", case(42), IN, 0.0, 1.0, every=0.1, rssi=-60.0)  # weak, short
    floor.sweep("door-b", case(42), IN, 0.5, 5.0, every=0.1, rssi=-40.0)  # strong, still going
    for tick in (0.1, 1.0, 10.0):
        arbiter = DoorArbiter.for_portals([a, b])
        result = run([Door(a, arbiter=arbiter), Door(b, arbiter=arbiter)], floor, until=30,
                     tick=tick)
        assert [(e.type, e.to) for e in result.events] == [("receive", "DOCK-B")], tick


def test_a_reader_thread_behind_is_not_a_quiet_door() -> None:
    """Silence moves the watermark on with host time only up to when the reader's thread had
    handed over everything it had: reads held up on their way do not arrive late."""
    clock = ReaderClock(0.5)
    read_at = T0 + timedelta(seconds=10)
    clock.seen(read_at, host=100.0)
    now = T0 + timedelta(seconds=20)
    quiet = clock.watermark(now, host=103.0)  # 3 s of real silence: moved on 2.5 s - 0.5 s
    assert quiet == read_at + timedelta(seconds=2.0)
    behind = clock.watermark(now, host=103.0, caught_up=99.0)  # the thread is behind
    assert behind == read_at - timedelta(seconds=0.5)  # holds at the newest read - lag
    partly = clock.watermark(now, host=103.0, caught_up=101.5)  # caught up 1.5 s in
    assert partly == read_at + timedelta(seconds=0.5)
