"""The door's rules one at a time: config, EPC patterns, RSSI floor, smoothing, bounds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from floorsync.devices.base import TagRead
from floorsync.devices.sim import sgtin96_hex
from floorsync.edge import wire
from floorsync.edge.config import PortalConfig, load
from floorsync.edge.epcmatch import EpcFilter, parse_pattern, parse_patterns
from floorsync.edge.errors import ConfigError
from floorsync.edge.portal import Door
from tests.edge.test_door_scenarios import IN, OUT, Floor, at, case, door, pallet, run

SGLN_TAG = "3214257BF400020000000000"  # urn:epc:id:sgln:0614141.00001.0
FOREIGN = sgtin96_hex("0012345", "012345", 1)  # another company's case
NOT_EPC = "E2801160600002054E3A1B2C"  # a TID-like number: no EPC header


# --- config -------------------------------------------------------------------------------


def test_antennas_as_a_table_or_a_list_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        'site = "wh1"\ndevice = "door-01"\n'
        '[[portals]]\nname = "door-a"\nlocation = "DOCK-A"\n'
        'antennas = {"1" = "outside", "2" = "inside", "3" = "door"}\n'
        'include = ["0614141"]\nexclude = ["urn:epc:id:sgln:0614141.00001.0"]\n'
        "rssi_min = -70.0\ngpi = 1\n"
        '[[portals]]\nname = "door-b"\nlocation = "DOCK-B"\ndirection = "out"\n'
        'antennas = [{antenna = 4, role = "inside"}]\n'
    )
    a, b = load(path).portals
    assert a.roles == {1: "outside", 2: "inside", 3: "door"} and a.gpi == 1
    assert a.antennas == ((1, "outside"), (2, "inside"), (3, "door"))
    assert a.include == ("0614141",) and a.rssi_min == -70.0
    assert b.roles == {4: "inside"} and b.direction == "out"
    defaults = (a.mode, a.direction, a.min_reads, a.quiet_s, a.cycle_s, a.arbitration_s)
    assert defaults == ("door", "auto", 2, 1.0, 10.0, 2.0)


@pytest.mark.parametrize(("settings", "message"), [
    ({"antennas": {"1": "outside"}}, "direction 'auto' needs"),
    ({"antennas": {"x": "outside"}}, "not a number"),
    ({"antennas": {"1": "roof"}}, "role must be one of"),
    ({"antennas": [{"antenna": 1}]}, "needs 'antenna' and 'role'"),
    ({"include": ("0614141.*",)}, "neither a GS1 company prefix"),
    ({"mode": "inventory"}, "mode must be"),
    ({"direction": "sideways"}, "direction must be"),
    ({"unmoved": "log"}, "unmoved must be"),
    ({"quiet_s": 0}, "quiet_s must be positive"),
    ({"min_reads": 0}, "min_reads must be a positive integer"),
    ({"gpi": True}, "gpi must be an input number"),
])
def test_config_refuses_doors_that_cannot_work(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PortalConfig(name="door-a", location="DOCK-A", **settings).check()  # type: ignore[arg-type]


def test_a_door_with_one_side_and_a_fixed_direction_is_fine() -> None:
    PortalConfig(name="d", location="L", antennas={"1": "outside"}, direction="in").check()
    PortalConfig(name="d", location="L", antennas={"1": "outside"}, mode="count").check()


# --- EPC patterns -------------------------------------------------------------------------


def test_patterns_company_prefix_uri_wildcards_idpat_and_hex() -> None:
    ours = case(5)  # urn:epc:id:sgtin:0614141.812345.5
    uri = "urn:epc:id:sgtin:0614141.812345.5"
    assert parse_pattern("0614141").matches(ours, uri)
    assert not parse_pattern("061414").matches(ours, uri)  # a prefix of the prefix is not it
    assert parse_pattern("urn:epc:id:sgtin:0614141.*").matches(ours, uri)
    assert parse_pattern("urn:epc:idpat:sgtin:0614141.812345.*").matches(ours, uri)
    assert not parse_pattern("urn:epc:id:sscc:0614141.*").matches(ours, uri)
    assert parse_pattern(ours.lower()).matches(ours, None)  # hex matches tags that do not decode
    assert parse_pattern("3034257BF7*").matches(ours, uri)
    with pytest.raises(ValueError):
        parse_pattern("ACME-*")
    only_ours_but_5 = EpcFilter(parse_patterns(["0614141"]),
                                parse_patterns(["urn:epc:id:sgtin:0614141.812345.5"]))
    assert not only_ours_but_5.accepts(ours, uri)
    assert only_ours_but_5.accepts(case(6), "urn:epc:id:sgtin:0614141.812345.6")
    assert not only_ours_but_5.accepts(FOREIGN, "urn:epc:id:sgtin:0012345.012345.1")


def test_include_and_exclude_patterns_and_the_doors_own_tag() -> None:
    config = door("door-a", "DOCK-A", include=("urn:epc:id:sgtin:0614141.*",),
                  exclude=(case(3), "urn:epc:id:sgtin:0614141.812345.4"))
    floor = Floor()
    floor.through("door-a", [*pallet(5), FOREIGN], 1.0, (OUT, IN))
    floor.sweep("door-a", SGLN_TAG, 2, 0.0, 8.0, every=0.2)  # always in the field
    result = run([Door(config)], floor, until=10)
    assert result.serials("receive", "DOCK-A") == ["1", "2", "5"]
    assert max(r.excluded for r in result.reports) == 4  # cases 3 and 4, foreign, SGLN


# --- smoothing ----------------------------------------------------------------------------


def test_reads_under_the_rssi_floor_are_ignored() -> None:
    config = door("door-a", "DOCK-A", rssi_min=-70.0)
    floor = Floor()
    floor.through("door-a", pallet(2), 1.0, (OUT, IN), rssi=-60.0)
    floor.through("door-a", pallet(2, first=10), 1.0, (OUT, IN), rssi=-80.0)  # next door's
    result = run([Door(config)], floor, until=8)
    assert result.serials("receive", "DOCK-A") == ["1", "2"]
    assert sum(r.weak for r in result.reports) > 20
    assert sum(r.tags for r in result.reports) == 2


def test_glimpses_expire_quietly_and_min_ms_also_makes_a_tag_observed() -> None:
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", min_reads=5,
                  min_ms=400)
    d = Door(config)
    floor = Floor()
    floor.glimpse("door-a", case(1), 1, 1.0, n=4, rssi=-60)  # 4 reads in 0.09 s: a glimpse
    floor.glimpse("door-a", case(2), 1, 1.0, n=5, rssi=-60)  # 5 reads: observed
    floor.glimpse("door-a", case(3), 1, 1.0, n=2, rssi=-60)  # 2 reads ...
    floor.glimpse("door-a", case(3), 1, 1.5, n=1, rssi=-60)  # ... over 500 ms: observed
    result = run([d], floor, until=6)
    assert result.serials("receive", "DOCK-A") == ["2", "3"]
    (report,) = result.reports
    assert (report.tags, report.glimpsed) == (2, 1)
    assert d.active_tags == 0


def test_a_tag_back_after_a_silence_is_a_new_pass_and_hold_stops_a_second_receive() -> None:
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", hold_s=30.0)
    floor = Floor()
    floor.sweep("door-a", case(1), 1, 1.0, 2.0)
    floor.sweep("door-a", case(1), 1, 5.0, 6.0)  # parked, moved, read again: held
    floor.sweep("door-a", case(1), 1, 40.0, 41.0)  # much later: a new receive
    result = run([Door(config)], floor, until=45)
    assert [e.type for e in result.events] == ["receive", "receive"]
    assert sum(r.held for r in result.reports) == 1


def test_reads_of_unmapped_antennas_are_ignored_and_counted() -> None:
    config = door("door-a", "DOCK-A")
    floor = Floor()
    floor.through("door-a", pallet(3), 1.0, (OUT, 3, IN))  # antenna 3 is not in the map
    result = run([Door(config)], floor, until=8)
    assert result.serials("receive", "DOCK-A") == ["1", "2", "3"]
    assert sum(r.unmapped for r in result.reports) > 10


def test_a_door_without_an_antenna_map_receives_whatever_passes() -> None:
    config = PortalConfig(name="door-a", location="DOCK-A", min_reads=2)
    floor = Floor()
    floor.through("door-a", pallet(3), 1.0, (7, 8))
    result = run([Door(config)], floor, until=8)
    assert result.serials("receive", "DOCK-A") == ["1", "2", "3"]


# --- what is not understood, and bounds ---------------------------------------------------


def test_unknown_epcs_are_counted_and_listed_once_never_fatal() -> None:
    config = door("door-a", "DOCK-A", include=())
    d = Door(config)
    floor = Floor()
    floor.sweep("door-a", NOT_EPC, 1, 0.5, 12.0, every=0.5)  # through two cycles
    floor.sweep("door-a", "not hex at all", 1, 0.5, 1.0, every=0.2)
    floor.through("door-a", pallet(2), 1.0, (OUT, IN))
    result = run([d], floor, until=15)
    assert result.serials("receive", "DOCK-A") == ["1", "2"]
    first, second = result.reports
    assert first.unknown == 2 and set(first.unknown_tags) == {NOT_EPC, "not hex at all"}
    assert second.unknown == 1 and second.unknown_tags == ()  # listed the first time only
    assert "unknown EPC" in (d.unknown_reason(NOT_EPC) or "")
    assert d.unknown_reason(case(1)) is None


def test_tags_past_the_cap_of_a_cycle_are_dropped_and_counted() -> None:
    config = door("door-a", "DOCK-A", max_tags=10, samples=7)
    floor = Floor()
    floor.through("door-a", pallet(15), 1.0, (OUT, IN))
    result = run([Door(config)], floor, until=8)
    assert len(result.events) == 10
    (report,) = result.reports
    assert report.tags == 10 and report.overflow > 0
    assert len(report.samples) == 7 and '"epc":"3034257BF7194E40000000' in report.samples[0]


def test_reads_older_than_the_watermark_are_processed_and_counted_late() -> None:
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in")
    d = Door(config)
    d.advance(at(5.0))
    for i in range(4):
        d.add(TagRead("door-a", case(1), 1, -50.0, at(1.0 + 0.1 * i)))
    events = d.advance(at(6.0))
    assert [e.type for e in events] == ["receive"]
    assert d.late_reads == 4


def test_reads_are_put_in_time_order_before_they_are_judged() -> None:
    config = door("door-a", "DOCK-A")
    floor = Floor()
    floor.through("door-a", pallet(4), 1.0, (OUT, IN))
    in_order = run([Door(config)], floor, until=8)
    d = Door(config)
    for read in reversed(floor.reads):  # all at once, backwards
        d.add(read)
    events = d.advance(at(8.0))
    assert [(e.type, e.item, e.read) for e in events] == [
        (e.type, e.item, e.read) for e in in_order.events]


def test_a_tag_staged_at_the_door_longer_than_hold_s_is_not_received_twice() -> None:
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", hold_s=60.0)
    floor = Floor()
    floor.sweep("door-a", case(1), 1, 0.0, 1.9, every=0.1)  # a pass: receive
    floor.sweep("door-a", case(1), 1, 3.5, 103.0, every=0.5)  # back, staged for 100 s: held
    result = run([Door(config)], floor, until=110)
    assert [e.type for e in result.events] == ["receive"]
    assert sum(r.held for r in result.reports) == 1


def test_one_big_batch_ends_quiet_passes_before_it_counts_overflow() -> None:
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", max_tags=3)
    floor = Floor()  # three tags in the cycle 0-10 s, three more in 10-20 s
    for n in (1, 2, 3):
        floor.sweep("door-a", case(n), 1, 9.5, 9.9, every=0.1)
    for n in (4, 5, 6):
        floor.sweep("door-a", case(n), 1, 12.0, 12.4, every=0.1)
    live = run([Door(config)], floor, until=20)
    d = Door(config)
    for read in floor.reads:
        d.add(read)
    batch = d.advance(at(30.0)) + d.finish()
    assert [e.item for e in batch] == [e.item for e in live.events] and len(batch) == 6
    assert [r.overflow for r in d.take_reports()] == [0, 0]


def _shelf(first: float, last: float) -> list[TagRead]:
    """Four tags on a shelf, each read twice a second from ``first`` to ``last``."""
    return [TagRead("shelf", case(n), 1, -50.0, at(first + k / 2 + n / 50))
            for k in range(round((last - first) * 2) + 1) for n in range(4)]


def _counts(d: Door, reads: list[TagRead], until: float,
            before: Sequence[wire.Event] = ()) -> list[tuple[datetime, int]]:
    for read in reads:
        d.add(read)
    events = [*before, *d.advance(at(until)), *d.finish()]
    return [(wire.parse_time(e.read.first, "first"), len(e.count.seen))  # type: ignore[union-attr]
            for e in events if e.type == "count" and e.read and e.count]


def test_count_mode_makes_no_count_of_a_cycle_the_reader_did_not_cover_completely() -> None:
    config = PortalConfig(name="shelf", location="A-01", mode="count", cycle_s=10.0)
    # started at 3 s (mid-cycle), stopped at 30.3 s (mid-cycle): only 10-20 and 20-30 are full
    counts = _counts(Door(config), _shelf(3.0, 30.3), until=29.8)
    assert counts == [(at(10.0), 4), (at(20.0), 4)]
    # started on a cycle boundary: that cycle is complete
    assert _counts(Door(config), _shelf(0.0, 19.9), until=25.0) == [(at(0.0), 4), (at(10.0), 4)]


def test_count_mode_makes_no_count_of_a_cycle_the_reader_went_offline_in() -> None:
    config = PortalConfig(name="shelf", location="A-01", mode="count", cycle_s=10.0)
    d = Door(config)
    for read in _shelf(0.0, 14.0):
        d.add(read)
    before = d.advance(at(13.0))
    d.interrupt()  # the reader drops off after its read at 14.06 s, back at 33 s
    counts = _counts(d, _shelf(33.0, 50.0), until=55.0, before=before)
    assert counts == [(at(0.0), 4), (at(40.0), 4)]  # not 10-20 (cut), nor 30-40 (begun late)
