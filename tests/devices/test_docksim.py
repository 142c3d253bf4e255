"""The dock traffic generator: seeded, sorted, physically plausible, with ground truth."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from floorsync.devices.base import TagRead
from floorsync.devices.codes import interpret_epc
from floorsync.devices.docksim import KINDS, DockSim, Scenario


def by_tag(reads: list[TagRead]) -> dict[str, list[TagRead]]:
    out: dict[str, list[TagRead]] = defaultdict(list)
    for r in reads:
        out[r.epc].append(r)
    return out


def test_the_same_seed_gives_the_same_traffic_and_every_kind_has_ground_truth() -> None:
    one = DockSim(seed=9, staged_s=(20.0, 30.0)).traffic(len(KINDS))
    two = DockSim(seed=9, staged_s=(20.0, 30.0)).traffic(len(KINDS))
    assert [(s.kind, s.reads, s.truth) for s in one] == [(s.kind, s.reads, s.truth) for s in two]
    assert [s.kind for s in one] == list(KINDS)
    for s in one:
        assert s.truth and s.read_count > 0
        assert {t.movement for t in s.truth} <= {"receive", "ship", None}
        for reader, reads in s.reads.items():
            assert reader in s.doors
            assert all(r.reader == reader and r.antenna in (1, 2) for r in reads)
            assert [r.at for r in reads] == sorted(r.at for r in reads)
            assert all(r.rssi is not None and -95.0 <= r.rssi <= -20.0 for r in reads)
    assert interpret_epc(one[0].truth[0].tag).kind == "item"
    with pytest.raises(ValueError):
        DockSim().scenario("teleport")


def test_crossings_read_on_both_sides_in_order_with_gaps_up_to_a_few_seconds() -> None:
    sim = DockSim(seed=2)
    gaps, per_round = [], []
    for _ in range(12):
        s = sim.scenario("inbound")
        reads = by_tag(s.reads["door-a"])
        for t in s.truth:
            assert t.movement == "receive"
            rs = [r for r in reads.get(t.tag, []) if r.rssi is not None and r.rssi > -74]
            if t.buried or not rs:
                continue
            outside = [r.at.timestamp() for r in rs if r.antenna == 1]
            inside = [r.at.timestamp() for r in rs if r.antenna == 2]
            if outside and inside:
                assert statistics.median(outside) < statistics.median(inside)
                gaps.append(min(inside) - max(outside))
            per_round.append(len(rs))
    assert max(gaps) > 0.5  # dead zones leave silences between the two fields
    assert min(per_round) >= 2


def test_buried_cases_are_read_only_a_handful_of_times_in_a_straight_pass() -> None:
    sim = DockSim(seed=5)
    counts = []
    for _ in range(40):
        s: Scenario = sim.scenario("outbound")
        reads = by_tag(s.reads["door-a"])
        times = s.truth
        counts += [len(reads.get(t.tag, [])) for t in times if t.buried]
    assert counts, "no buried cases"
    assert 2.0 <= statistics.mean(counts) <= 5.5
    assert sum(1 for c in counts if c <= 6) >= 0.8 * len(counts)


def test_staged_pallets_are_read_by_the_near_antenna_and_rarely_weakly_by_the_far_one() -> None:
    sim = DockSim(seed=11, staged_s=(40.0, 60.0))
    near = far = 0
    far_rssi: list[float] = []
    for _ in range(6):
        s = sim.scenario("staged")
        start, end = s.start.timestamp(), s.end.timestamp()
        # the middle of the scenario: the pallet is parked (it takes < 10 s to come and go)
        middle = [r for r in s.reads["door-a"]
                  if start + 0.4 * (end - start) <= r.at.timestamp() <= start + 0.6 * (end - start)]
        antennas = [r.antenna for r in middle]
        main = max((1, 2), key=antennas.count)
        near += antennas.count(main)
        far += antennas.count(3 - main)
        far_rssi += [r.rssi for r in middle if r.antenna != main and r.rssi is not None]
    assert near > 20 * far
    assert far > 0  # now and then, through reflections
    assert max(far_rssi) < -70


def test_the_neighbour_reads_the_other_doors_tags_weakly_if_at_all() -> None:
    sim = DockSim(seed=4)
    stray, own = [], []
    for _ in range(8):
        s = sim.scenario("neighbour")
        doors = {t.tag: t.door for t in s.truth}
        for reader, reads in s.reads.items():
            for r in reads:
                (own if doors[r.epc] == reader else stray).append(r.rssi)
    assert own and stray
    assert len(stray) < 0.05 * len(own)
    assert max(stray) < -74  # type: ignore[type-var]
    assert statistics.median(own) > -68  # type: ignore[type-var]
