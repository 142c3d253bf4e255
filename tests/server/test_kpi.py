"""``/api/v1/kpi``: inventory record accuracy and dock-to-stock time, from real events applied
through ``Store.apply_batch`` and real counts (floor count events, count sessions through the
API), on SQLite through the real app; exact values on data small enough to check by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from floorsync.edge import wire
from floorsync.server import docktostock, kpibench, orderkpis, recordaccuracy
from floorsync.server.app import create_app
from floorsync.server.kpi import read, span
from floorsync.server.ledger import Store
from floorsync.server.masterdata import MasterData
from tests.server.helpers import READ_TOKEN, WRITE_TOKEN, api_settings, bearer
from tests.server.orderkit import SKUS

SITE, DEV = "wh1", "hh-01"
G, H, K, L = "09501101530003", "09501101530010", "09501101530027", "09501101530034"
P = "/api/v1/kpi"
_seq = iter(range(1, 10**9))

# site wh1: zone Z1 (aisle Z1-A: bins A1, A2; zone Z1B inside Z1: bin A3), zone Z2 (bin B1),
# bins C1 and C2 and the dock under no zone
TREE = """site,code,kind,parent
wh1,wh1,site,
wh1,Z1,zone,
wh1,Z1-A,aisle,Z1
wh1,A1,bin,Z1-A
wh1,A2,bin,Z1-A
wh1,Z1B,zone,Z1
wh1,A3,bin,Z1B
wh1,Z2,zone,
wh1,B1,bin,Z2
wh1,C1,bin,
wh1,C2,bin,
wh1,DOCK,bin,
wh1,X,bin,
wh1,OUT,bin,
"""


def ev(type: str, time: str, *, gtin: str = G, qty: float = 1, src: str | None = None,
       dst: str | None = None, serial: str | None = None, lot: str | None = None
       ) -> wire.Event:
    return wire.Event(wire.new_event_id(), next(_seq), time, type,
                      wire.Item(gtin=gtin, serial=serial, lot=lot), qty, src, dst)


def count(location: str, time: str, *seen: tuple[str, float]) -> wire.Event:
    lines = tuple(wire.CountLine(wire.Item(gtin=g), q) for g, q in seen)
    return wire.Event(wire.new_event_id(), next(_seq), time, "count", None, 0,
                      count=wire.Count(location, lines))


def apply(store: Store, *events: wire.Event) -> None:
    results = store.apply_batch(wire.Batch(SITE, DEV, wire.utc_now(), events), source="http")
    assert all(r.status == "applied" for r in results), results


@pytest.fixture
def reader(store: Store, tmp_path: Any) -> Any:
    """The app on ``store`` with the read token (the KPIs need no more)."""
    MasterData(store).import_locations(TREE)
    app = create_app(api_settings(tmp_path / "ledger.db"), store=store)
    with TestClient(app, headers=bearer(READ_TOKEN)) as c:
        yield c


def get(client: TestClient, kpi: str, **params: Any) -> dict[str, Any]:
    answer = client.get(f"{P}/{kpi}", params={"site": SITE, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def tally(part: dict[str, Any]) -> tuple[int, int, int, float | None]:
    return part["counts"], part["lines"], part["matched"], part["accuracy"]


def zones(part: dict[str, Any]) -> dict[str | None, tuple[int, int, int, float | None]]:
    return {z["zone"]: tally(z) for z in part["zones"]}


# --- inventory record accuracy ---------------------------------------------------------------


def _five_counts(store: Store) -> None:
    """A1 right, A2 one short of 5, A3 right, B1 three short of 100, C1 two found where the books
    had none, C2 empty and counted empty (no lines)."""
    apply(store, ev("receive", "2026-03-02T08:00:00.000Z", dst="A1", qty=10),
          ev("receive", "2026-03-02T08:00:00.000Z", gtin=H, dst="A2", qty=5),
          ev("receive", "2026-03-02T08:00:00.000Z", gtin=H, dst="A3", qty=1),
          ev("receive", "2026-03-02T08:00:00.000Z", dst="B1", qty=100))
    apply(store, count("A1", "2026-03-02T10:00:00.000Z", (G, 10)),
          count("A2", "2026-03-02T10:00:00.000Z", (H, 4)),
          count("A3", "2026-03-02T10:00:00.000Z", (H, 1)),
          count("B1", "2026-03-02T10:00:00.000Z", (G, 97)),
          count("C1", "2026-03-02T10:00:00.000Z", (G, 2)),
          count("C2", "2026-03-02T10:00:00.000Z"))


def test_lines_match_within_the_tolerance_per_zone(reader: TestClient, store: Store) -> None:
    _five_counts(store)
    day = {"from": "2026-03-02", "to": "2026-03-03", "group": "zone"}
    exact = get(reader, "inventory-accuracy", **day)
    assert tally(exact["total"]) == (6, 5, 2, 0.4)  # A1 and A3 of A1, A2, A3, B1, C1
    assert zones(exact["total"]) == {
        "Z1": (2, 2, 1, 0.5), "Z1B": (1, 1, 1, 1.0),  # A3's nearest zone is Z1B, not Z1
        "Z2": (1, 1, 0, 0.0), None: (2, 1, 0, 0.0)}  # C2's count has no line
    assert [z["zone"] for z in exact["total"]["zones"]] == ["Z1", "Z1B", "Z2", None]
    assert exact["parameters"] == {
        "site": SITE, "from": "2026-03-02T00:00:00.000+00:00",
        "to": "2026-03-03T00:00:00.000+00:00", "period": "day", "tz": "UTC",
        "tolerance": 0.0, "tolerance_pct": 0.0, "group": "zone"}
    assert "|counted - record| <= max(tolerance, tolerance_pct % of |record|)" in exact[
        "definition"]
    (only,) = exact["periods"]
    assert only["period"] == "2026-03-02" and tally(only) == (6, 5, 2, 0.4)
    assert zones(only) == zones(exact["total"])
    # one unit either way: A2 (4 of 5) matches, B1 (3 off) and C1 (2 off) do not
    assert tally(get(reader, "inventory-accuracy", **day, tolerance=1)["total"]) == (
        6, 5, 3, 0.6)
    # 5 % of the record: B1 (3 of 100) matches, A2 (1 of 5 = 20 %) does not, nor C1 (of 0)
    assert tally(get(reader, "inventory-accuracy", **day, tolerance_pct=5)["total"]) == (
        6, 5, 3, 0.6)
    assert tally(get(reader, "inventory-accuracy", **day, tolerance_pct=20)["total"]) == (
        6, 5, 4, 0.8)  # 20 % of 5 is exactly 1: at the tolerance matches
    assert tally(get(reader, "inventory-accuracy", **day, tolerance=1,
                     tolerance_pct=5)["total"]) == (6, 5, 4, 0.8)
    assert tally(get(reader, "inventory-accuracy", **day, tolerance=2)["total"]) == (
        6, 5, 4, 0.8)  # C1 found 2 where the books had 0: within 2 units
    plain = get(reader, "inventory-accuracy", **{**day, "group": "site"})
    assert plain["total"]["zones"] is None and plain["periods"][0]["zones"] is None


def test_only_final_counts_count(reader: TestClient, store: Store) -> None:
    today = datetime.now(UTC).date()
    apply(store, ev("receive", wire.format_time(datetime.now(UTC) - timedelta(hours=2)),
                    dst="A1", qty=10),
          ev("receive", wire.format_time(datetime.now(UTC) - timedelta(hours=2)),
             dst="B1", qty=3))
    writer = TestClient(reader.app, headers=bearer(WRITE_TOKEN))

    def session(location: str, counted: float) -> int:
        opened = writer.post("/api/v1/counts", json={"site": SITE, "location": location,
                                                     "by": "ann"})
        assert opened.status_code == 201, opened.text
        ident: int = opened.json()["id"]
        writer.post(f"/api/v1/counts/{ident}/lines", json={"lines": [{"item": G,
                                                                       "qty": counted}]})
        return ident

    session("A1", 9)  # open: not final
    cancelled = session("B1", 3)
    assert writer.post(f"/api/v1/counts/{cancelled}/cancel", json={"by": "ann"}).is_success
    waiting = session("A2", 1)
    apply(store, ev("receive", wire.local_now(), dst="A2", qty=1))  # moved during the count
    assert writer.post(f"/api/v1/counts/{waiting}/close", json={"by": "ann"}).json()[
        "status"] == "needs_decision"
    posted = session("C1", 0)  # nothing there, nothing found: posted, but no line
    assert writer.post(f"/api/v1/counts/{posted}/close", json={"by": "ann"}).json()[
        "status"] == "posted"
    # a floor count of B1 dated before B1's latest count (the cancelled one does not count;
    # a posted floor count does) arrives late: kept as late, not applied
    apply(store, count("B1", wire.format_time(datetime.now(UTC) - timedelta(minutes=30)),
                       (G, 3)))
    apply(store, count("B1", wire.format_time(datetime.now(UTC) - timedelta(minutes=40)),
                       (G, 1)))
    statuses = sorted(s for (s,) in store._query("SELECT status FROM counts"))
    assert statuses == ["cancelled", "late", "needs_decision", "open", "posted", "posted"]
    found = get(reader, "inventory-accuracy", **{
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat()})
    assert tally(found["total"]) == (2, 1, 1, 1.0)  # C1's session and B1's first floor count


@pytest.mark.parametrize(("keep", "tolerance", "matched"), [
    ("counted", 1, 1),  # record: on-hand at close, 7; counted 8
    ("difference", 1, 0),  # record: on-hand at the start, 10; counted 8
    ("difference", 2, 1),
])
def test_a_sessions_record_is_what_the_person_kept(
    reader: TestClient, store: Store, keep: str, tolerance: float, matched: int
) -> None:
    apply(store, ev("receive", wire.local_now(), dst="A1", qty=10))
    writer = TestClient(reader.app, headers=bearer(WRITE_TOKEN))
    ident = writer.post("/api/v1/counts", json={"site": SITE, "location": "A1",
                                                "by": "ann"}).json()["id"]
    writer.post(f"/api/v1/counts/{ident}/lines", json={"lines": [{"item": G, "qty": 8}]})
    apply(store, ev("pick", wire.local_now(), src="A1", qty=3))
    writer.post(f"/api/v1/counts/{ident}/close", json={"by": "ann"})
    decided = writer.post(f"/api/v1/counts/{ident}/decide", json={"keep": keep, "by": "lead"})
    assert decided.json()["status"] == "posted"
    today = datetime.now(UTC).date()
    found = get(reader, "inventory-accuracy", tolerance=tolerance, **{
        "from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()})
    assert tally(found["total"]) == (1, 1, matched, float(matched))


def test_periods_are_days_weeks_and_months_of_the_time_zone(
    reader: TestClient, store: Store
) -> None:
    # Europe/Berlin: +01:00 until 2026-03-29 02:00, +02:00 after (that day has 23 hours)
    apply(store, count("A1", "2026-03-01T22:30:00.000Z", (G, 0)),  # Berlin: 1 March 23:30
          count("A2", "2026-03-01T23:30:00.000Z", (G, 1)),  # Berlin: 2 March 00:30
          count("B1", "2026-03-29T21:30:00.000Z", (G, 1)),  # Berlin: 29 March 23:30
          count("C1", "2026-03-29T22:00:00.000Z", (G, 1)))  # Berlin: 30 March 00:00
    utc = get(reader, "inventory-accuracy", **{"from": "2026-03-01", "to": "2026-03-03"})
    assert [(p["period"], p["counts"]) for p in utc["periods"]] == [
        ("2026-03-01", 2), ("2026-03-02", 0)]
    berlin = get(reader, "inventory-accuracy", tz="Europe/Berlin", **{
        "from": "2026-03-01", "to": "2026-03-03"})
    assert [(p["period"], p["start"], p["end"], p["counts"]) for p in berlin["periods"]] == [
        ("2026-03-01", "2026-03-01T00:00:00.000+01:00", "2026-03-02T00:00:00.000+01:00", 1),
        ("2026-03-02", "2026-03-02T00:00:00.000+01:00", "2026-03-03T00:00:00.000+01:00", 1)]
    # the A1 count (0 counted, 0 on record) has no line; A2's found 1 where none was
    assert [tally(p) for p in berlin["periods"]] == [(1, 0, 0, None), (1, 1, 0, 0.0)]
    dst = get(reader, "inventory-accuracy", tz="Europe/Berlin", **{
        "from": "2026-03-29", "to": "2026-03-31"})
    assert [(p["period"], p["start"], p["end"], p["counts"]) for p in dst["periods"]] == [
        ("2026-03-29", "2026-03-29T00:00:00.000+01:00", "2026-03-30T00:00:00.000+02:00", 1),
        ("2026-03-30", "2026-03-30T00:00:00.000+02:00", "2026-03-31T00:00:00.000+02:00", 1)]
    weeks = get(reader, "inventory-accuracy", tz="Europe/Berlin", period="week", **{
        "from": "2026-03-25", "to": "2026-04-03"})
    assert [(p["period"], p["start"], p["end"], p["counts"]) for p in weeks["periods"]] == [
        ("2026-W13", "2026-03-25T00:00:00.000+01:00", "2026-03-30T00:00:00.000+02:00", 1),
        ("2026-W14", "2026-03-30T00:00:00.000+02:00", "2026-04-03T00:00:00.000+02:00", 1)]
    months = get(reader, "inventory-accuracy", tz="Europe/Berlin", period="month", **{
        "from": "2026-02-15", "to": "2026-04-02T12:00:00+02:00"})
    assert [(p["period"], p["start"], p["end"], p["counts"]) for p in months["periods"]] == [
        ("2026-02", "2026-02-15T00:00:00.000+01:00", "2026-03-01T00:00:00.000+01:00", 0),
        ("2026-03", "2026-03-01T00:00:00.000+01:00", "2026-04-01T00:00:00.000+02:00", 4),
        ("2026-04", "2026-04-01T00:00:00.000+02:00", "2026-04-02T12:00:00.000+02:00", 0)]
    assert months["total"]["counts"] == 4
    # a range given as instants: [from, to) exactly
    edge = get(reader, "inventory-accuracy", **{
        "from": "2026-03-01T22:30:00Z", "to": "2026-03-01T23:30:00.000Z"})
    assert edge["total"]["counts"] == 1  # 22:30 in, 23:30 out


def test_an_empty_range_has_every_period_and_no_accuracy(reader: TestClient) -> None:
    found = get(reader, "inventory-accuracy", period="week", group="zone", **{
        "from": "2026-01-01", "to": "2026-01-15"})
    assert tally(found["total"]) == (0, 0, 0, None) and found["total"]["zones"] == []
    assert [p["period"] for p in found["periods"]] == ["2026-W01", "2026-W02", "2026-W03"]
    assert all(tally(p) == (0, 0, 0, None) for p in found["periods"])


# --- dock-to-stock ---------------------------------------------------------------------------


def stats(part: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(part[k] for k in ("units", "timed_units", "untimed_units", "mean_s",
                                   "median_s", "p90_s", "max_s"))


def test_units_leave_the_dock_first_in_first_out(reader: TestClient, store: Store) -> None:
    # 10 received at 07:00 (written +01:00, and once in the +0100 form SQLite cannot read),
    # 4 put away at 08:00 (1 h), 5 received at 09:30, 8 put away at 12:00: 6 of the first
    # receive (5 h), 2 of the second (2.5 h); applied in an order other than their times
    apply(store, ev("putaway", "2026-03-02T12:00:00.000Z", src="DOCK", dst="A1", qty=8))
    apply(store, ev("receive", "2026-03-02T08:00:00.000+0100", dst="DOCK", qty=10),
          ev("putaway", "2026-03-02T09:00:00.000+01:00", src="DOCK", dst="A1", qty=4),
          ev("receive", "2026-03-02T09:30:00.000Z", dst="DOCK", qty=5))
    found = get(reader, "dock-to-stock", **{"from": "2026-03-01", "to": "2026-03-04"})
    # mean (4 * 3600 + 6 * 18000 + 2 * 9000) / 12; median: the 6th unit of 12 (9000 s);
    # p90: the 11th (18000 s)
    assert stats(found["total"]) == (12, 12, 0, 11700, 9000, 18000, 18000)
    assert [(p["period"], p["units"]) for p in found["periods"]] == [
        ("2026-03-01", 0), ("2026-03-02", 12), ("2026-03-03", 0)]
    assert found["parameters"]["horizon_days"] == 7
    assert "first in, first out" in found["definition"]
    # the 1 h put-away alone: from is an instant
    early = get(reader, "dock-to-stock", **{"from": "2026-03-02T08:00:00Z",
                                             "to": "2026-03-02T08:00:00.001Z"})
    assert stats(early["total"]) == (4, 4, 0, 3600, 3600, 3600, 3600)


def test_serialised_units_are_matched_by_their_serial(reader: TestClient, store: Store) -> None:
    apply(store, ev("receive", "2026-03-02T08:00:00.000Z", dst="DOCK", serial="S1"),
          ev("receive", "2026-03-02T09:00:00.000Z", dst="DOCK", serial="S2"),
          ev("putaway", "2026-03-02T10:00:00.000Z", src="DOCK", dst="A1", serial="S2"),
          ev("putaway", "2026-03-02T12:00:00.000Z", src="DOCK", dst="A1", serial="S1"))
    found = get(reader, "dock-to-stock", **{"from": "2026-03-02", "to": "2026-03-03"})
    # by serial 1 h and 4 h (first in, first out by quantity would say 2 h and 3 h)
    assert stats(found["total"]) == (2, 2, 0, 9000, 3600, 14400, 14400)


def test_units_without_a_receive_are_put_away_untimed(reader: TestClient, store: Store) -> None:
    apply(store,
          # G: received 40 days before, 2 of 5 put away in the range
          ev("receive", "2026-01-21T08:00:00.000Z", dst="DOCK", qty=5),
          ev("putaway", "2026-03-02T09:00:00.000Z", src="DOCK", dst="A1", qty=2),
          # H: 4 received, 2 picked straight from the dock, then 2 put away 3 h after
          ev("receive", "2026-03-02T08:00:00.000Z", gtin=H, dst="DOCK", qty=4),
          ev("pick", "2026-03-02T09:00:00.000Z", gtin=H, src="DOCK", qty=2),
          ev("putaway", "2026-03-02T11:00:00.000Z", gtin=H, src="DOCK", dst="A1", qty=2),
          # K: moved to the dock from X, then put away: never received there
          ev("receive", "2026-03-01T08:00:00.000Z", gtin=K, dst="X", qty=3),
          ev("move", "2026-03-02T08:00:00.000Z", gtin=K, src="X", dst="DOCK", qty=3),
          ev("putaway", "2026-03-02T09:00:00.000Z", gtin=K, src="DOCK", dst="A1", qty=3),
          # L: put away an hour before its receive is dated
          ev("putaway", "2026-03-02T09:00:00.000Z", gtin=L, src="DOCK", dst="A1", qty=1),
          ev("receive", "2026-03-02T10:00:00.000Z", gtin=L, dst="DOCK", qty=1))
    window = {"from": "2026-03-02", "to": "2026-03-03"}
    found = get(reader, "dock-to-stock", **window)
    assert stats(found["total"]) == (8, 2, 6, 10800, 10800, 10800, 10800)
    # with a horizon of 60 days, G's receive 40 days before is found
    longer = get(reader, "dock-to-stock", horizon_days=60, **window)
    waited = 40 * 86400 + 3600
    assert stats(longer["total"]) == (8, 4, 4, (2 * waited + 2 * 10800) / 4, 10800, waited,
                                      waited)
    assert get(reader, "dock-to-stock", horizon_days=0, **{
        "from": "2026-03-02T09:00:00Z", "to": "2026-03-02T10:00:00Z"})["total"]["units"] == 6


def test_dock_periods_follow_the_put_away_in_the_time_zone(
    reader: TestClient, store: Store
) -> None:
    apply(store, ev("receive", "2026-03-01T22:00:00.000Z", dst="DOCK", qty=2),
          ev("putaway", "2026-03-01T23:30:00.000Z", src="DOCK", dst="A1", qty=2))
    window = {"from": "2026-03-01", "to": "2026-03-03"}
    utc = get(reader, "dock-to-stock", **window)
    assert [(p["period"], p["timed_units"]) for p in utc["periods"]] == [
        ("2026-03-01", 2), ("2026-03-02", 0)]
    berlin = get(reader, "dock-to-stock", tz="Europe/Berlin", **window)
    assert [(p["period"], p["timed_units"], p["median_s"]) for p in berlin["periods"]] == [
        ("2026-03-01", 0, None), ("2026-03-02", 2, 5400)]
    empty = get(reader, "dock-to-stock", **{"from": "2025-03-01", "to": "2025-03-03"})
    assert stats(empty["total"]) == (0, 0, 0, None, None, None, None)
    assert len(empty["periods"]) == 2


# --- orders ----------------------------------------------------------------------------------


def sku(letter: str, type: str, time: str, qty: float = 1, *, src: str | None = None,
        dst: str | None = None, order: str | None = None, check: str | None = None
        ) -> wire.Event:
    """An event of SKU-``letter`` (by its GTIN), against ``order`` when given."""
    return wire.Event(wire.new_event_id(), next(_seq), time, type,
                      wire.Item(gtin=SKUS[f"SKU-{letter}"]), qty, src, dst,
                      doc=None if order is None else wire.DocRef("order", order, check))


@pytest.fixture
def desk(reader: TestClient, store: Store) -> TestClient:
    """The app with items SKU-A..E and a write token, for orders."""
    MasterData(store).import_items("sku,gtins\n" + "".join(
        f"{s},{g}\n" for s, g in SKUS.items()))
    return TestClient(reader.app, headers=bearer(WRITE_TOKEN))


def accept(desk: TestClient, ident: str, *lines: tuple[str, float]) -> datetime:
    """An order of SKU lines; returns when it was accepted."""
    answer = desk.post("/api/v1/orders", json={
        "id": ident, "site": SITE, "ship_to": "ACME", "due": "2026-12-31",
        "lines": [{"item": f"SKU-{c}", "qty": q} for c, q in lines]})
    assert answer.status_code == 201, answer.text
    accepted = datetime.fromisoformat(answer.json()["received_at"])  # microseconds
    # to the millisecond (rounded), as the KPIs read times
    return accepted.replace(microsecond=0) + timedelta(
        milliseconds=(accepted.microsecond + 500) // 1000)


def at(moment: datetime, seconds: float = 0) -> str:
    return wire.format_time(moment + timedelta(seconds=seconds))


def around_now() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"from": (today - timedelta(days=1)).isoformat(),
            "to": (today + timedelta(days=2)).isoformat()}


def test_fill_rate_counts_lines_units_and_orders_never_backordered(
    desk: TestClient, store: Store
) -> None:
    apply(store, sku("A", "receive", wire.local_now(), 10, dst="B1"),
          sku("B", "receive", wire.local_now(), 3, dst="B1"))
    accept(desk, "SO-1", ("A", 4), ("B", 2))  # all from stock
    accept(desk, "SO-2", ("A", 6), ("B", 3))  # B: 1 free, 2 backordered
    accept(desk, "SO-3", ("C", 5))  # none: 5 backordered
    accept(desk, "SO-4", ("A", 1))  # cancelled: not counted
    assert desk.post("/api/v1/orders/SO-4/cancel", json={"by": "ann"}).status_code == 200
    apply(store, sku("C", "receive", wire.local_now(), 5, dst="B1"))  # fills SO-3 late
    assert store._query("SELECT status FROM backorders WHERE order_id = 'SO-3'") == [
        ("filled",)]
    found = get(desk, "fill-rate", **around_now())
    assert found["total"] == {
        "orders": 3, "filled_orders": 1, "order_fill_rate": 1 / 3,
        "lines": 5, "filled_lines": 3, "line_fill_rate": 0.6,
        "units": 20, "filled_units": 13, "unit_fill_rate": 0.65}
    assert "never had a backorder" in found["definition"]
    assert sum(p["orders"] for p in found["periods"]) == 3
    yesterday = get(desk, "fill-rate", **{**around_now(), "to": (
        datetime.now(UTC) - timedelta(hours=1)).isoformat()})
    assert yesterday["total"]["orders"] == 0 and yesterday["total"]["line_fill_rate"] is None


def test_pick_accuracy_is_the_share_of_picks_the_order_agreed_with(
    desk: TestClient, store: Store
) -> None:
    apply(store, sku("A", "receive", wire.local_now(), 10, dst="B1"),
          sku("B", "receive", wire.local_now(), 10, dst="B1"),
          sku("D", "receive", wire.local_now(), 10, dst="B1"))
    accept(desk, "SO-1", ("A", 4), ("B", 2))
    apply(store,
          sku("A", "pick", "2026-11-01T23:30:00.000Z", 4, src="B1", order="SO-1",
              check="expected"),  # right
          sku("B", "pick", "2026-11-02T08:00:00.000Z", 3, src="B1", order="SO-1",
              check="expected"),  # the edge thought so; the order asks for 2: order_over
          sku("D", "pick", "2026-11-02T09:00:00.000Z", 1, src="B1", order="SO-1",
              check="unexpected"),  # not on the order
          sku("A", "pick", "2026-11-02T10:00:00.000Z", 1, src="B1", order="SO-404",
              check="unknown"),  # no such order
          sku("A", "pick", "2026-11-02T11:00:00.000Z", 1, src="B1"))  # no order: not counted
    kinds = sorted(k for (k,) in store._query(
        "SELECT kind FROM exceptions WHERE kind LIKE 'order_%'"))
    assert kinds == ["order_over", "order_unexpected", "order_unknown"]
    found = get(desk, "pick-accuracy", **{"from": "2026-11-01", "to": "2026-11-03"})
    assert found["total"] == {"picks": 4, "accurate": 1, "accuracy": 0.25, "edge_checks": {
        "expected": 2, "over": 0, "unexpected": 1, "unknown": 1}}
    assert [(p["period"], p["picks"], p["accurate"]) for p in found["periods"]] == [
        ("2026-11-01", 1, 1), ("2026-11-02", 3, 0)]
    berlin = get(desk, "pick-accuracy", tz="Europe/Berlin", **{
        "from": "2026-11-01", "to": "2026-11-03"})  # 23:30Z is 00:30 on 2 November there
    assert [(p["period"], p["picks"]) for p in berlin["periods"]] == [
        ("2026-11-01", 0), ("2026-11-02", 4)]


def test_order_cycle_time_runs_from_acceptance_to_the_last_ship(
    desk: TestClient, store: Store
) -> None:
    apply(store, sku("A", "receive", wire.local_now(), 20, dst="B1"),
          sku("B", "receive", wire.local_now(), 1, dst="B1"),
          sku("E", "receive", wire.local_now(), 5, dst="B1"))
    one = accept(desk, "SO-1", ("A", 4), ("B", 1))
    apply(store, sku("A", "pick", at(one, 600), 4, src="B1", dst="OUT", order="SO-1"),
          sku("B", "pick", at(one, 700), 1, src="B1", dst="OUT", order="SO-1"))
    apply(store, sku("A", "ship", at(one, 3600), 4, src="OUT", order="SO-1"))
    apply(store, sku("B", "ship", at(one, 10800), 1, src="OUT", order="SO-1"))  # closes: 3 h
    two = accept(desk, "SO-2", ("A", 2), ("B", 3))  # B backordered: never closes here
    apply(store, sku("A", "ship", at(two, 600), 2, src="B1", order="SO-2"))
    five = accept(desk, "SO-5", ("E", 1))
    apply(store, sku("E", "ship", at(five, 7200), 1, src="B1", order="SO-5"))  # 2 h
    apply(store, sku("E", "ship", at(five, 36000), 1, src="B1", order="SO-5"))  # after close
    six = accept(desk, "SO-6", ("A", 1))
    apply(store, sku("A", "ship", at(six, -3600), 1, src="B1", order="SO-6"))  # clock behind
    states = dict(store._query("SELECT id, status FROM orders"))
    assert states == {"SO-1": "closed", "SO-2": "open", "SO-5": "closed", "SO-6": "closed"}
    found = get(desk, "order-cycle-time", **around_now())
    # 10800, 7200 and 0 s: the median is the 2nd of 3, p90 the 3rd
    assert found["total"] == {"orders": 3, "mean_s": 6000, "median_s": 7200, "p90_s": 10800,
                              "max_s": 10800}
    assert "last ship" in found["definition"]
    # an order belongs to the period of its last ship: SO-1's is 3 h after it was accepted
    before = get(desk, "order-cycle-time", **{"from": at(one, -86400),
                                               "to": at(one, 10800)})
    assert before["total"]["orders"] == 2  # SO-5 (2 h) and SO-6 (dated before acceptance)


# --- parameters, access, indexes ---------------------------------------------------------------


KPIS = ("inventory-accuracy", "dock-to-stock", "order-cycle-time", "pick-accuracy", "fill-rate")


@pytest.mark.parametrize(("kpi", "params", "says"), [
    ("inventory-accuracy", {"from": "2026-03-02", "to": "2026-03-01"}, "must be after"),
    ("inventory-accuracy", {"from": "2026-03-02", "to": "2026-03-02"}, "must be after"),
    ("dock-to-stock", {"from": "2026-02-30", "to": "2026-03-02"}, "not a date"),
    ("dock-to-stock", {"from": "2026-03-01T10:00", "to": "2026-03-02"}, "no UTC offset"),
    ("dock-to-stock", {"from": "yesterday at 5", "to": "2026-03-02"}, "not an ISO 8601"),
    ("dock-to-stock", {"from": "2026-03-01", "to": "2026-03-02", "tz": "Mars/Olympus"},
     "not a time zone"),
    ("dock-to-stock", {"from": "2026-03-01", "to": "2026-03-02", "tz": "../../etc/passwd"},
     "not an IANA"),
    ("inventory-accuracy", {"from": "2020-01-01", "to": "2026-01-01"}, "at most 1000"),
    ("dock-to-stock", {"from": "0001-01-01", "to": "0001-01-03", "tz": "Asia/Tokyo"},
     "outside the years"),
    ("fill-rate", {"from": "9999-12-30", "to": "9999-12-31T23:59:59+00:00",
                   "period": "month"}, "outside the years"),
    ("order-cycle-time", {"from": "1970-01-01T00:00:00-05:00", "to": "1970-01-02"},
     "outside the years"),
    ("inventory-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "period": "year"},
     "period"),
    ("inventory-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "tolerance": "-1"},
     "tolerance"),
    ("inventory-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "tolerance": "nan"},
     "tolerance"),
    ("inventory-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "tolerance_pct": "101"},
     "tolerance_pct"),
    ("inventory-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "group": "aisle"},
     "group"),
    ("dock-to-stock", {"from": "2026-03-01", "to": "2026-03-02", "horizon_days": "367"},
     "horizon_days"),
    ("dock-to-stock", {"from": "2026-03-01", "to": "2026-03-02", "horizon_days": "-1"},
     "horizon_days"),
    ("dock-to-stock", {"to": "2026-03-02"}, "from"),
    ("dock-to-stock", {"from": "2026-03-01", "to": "2026-03-02", "site": "a b"}, "site"),
    ("order-cycle-time", {"from": "2026-03-02", "to": "2026-03-01"}, "must be after"),
    ("pick-accuracy", {"from": "2026-03-01", "to": "2026-03-02", "tz": "Nowhere/Town"},
     "not a time zone"),
    ("fill-rate", {"from": "2026-03-01", "to": "2026-03-02", "period": "quarter"}, "period"),
    ("fill-rate", {"from": "2026-03-01"}, "to"),
])
def test_bad_parameters_are_422(reader: TestClient, kpi: str, params: dict[str, str],
                                says: str) -> None:
    answer = reader.get(f"{P}/{kpi}", params={"site": SITE, **params})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert says in answer.json()["detail"]


def test_kpis_need_a_read_token(reader: TestClient) -> None:
    params = {"site": SITE, "from": "2026-03-01", "to": "2026-03-02"}
    for kpi in KPIS:
        assert reader.get(f"{P}/{kpi}", params=params, headers={"Authorization": ""}
                          ).status_code == 401


def test_the_queries_use_their_indexes(sqlite_store: Store) -> None:
    """SQLite's plans (PostgreSQL chooses by its statistics, so a tiny table is scanned)."""
    store = sqlite_store
    window = span("2026-03-01", "2026-04-01", "day", "UTC")
    plan = " | ".join(row[3] for row in read(store, "EXPLAIN QUERY PLAN " + docktostock._MATCH, {
        "site": SITE, "t0": 0, "start": 0, "end": 1, "lo_text": "2026", "hi_text": "2027",
        "id0": 0, "eps": 1e-9}))
    assert "SEARCH movements USING INDEX movements_receiving (site=? AND event_time>? AND" in plan
    assert ("SEARCH m USING INDEX movements_item_location (item=? AND location=? AND lot=? AND"
            " rowid>?)") in plan
    assert "SCAN movements" not in plan and "SCAN m " not in plan
    plan = " | ".join(row[3] for row in read(
        store, "EXPLAIN QUERY PLAN " + recordaccuracy._PER_COUNT, {
            "site": SITE, "start": window.start.isoformat(), "end": window.end.isoformat(),
            "units": 0, "pct": 0, "eps": 1e-9}))
    assert "SEARCH counts USING INDEX counts_posted (site=? AND counted_at>? AND" in plan
    assert "SCAN counts" not in plan and "SCAN l" not in plan
    for sql, params, uses in [
        (orderkpis._CYCLES, {"site": SITE, "since": "2026", "start": 0, "end": 1},
         ["orders USING INDEX orders_closed (site=? AND closed_at>?)",
          "e USING INDEX events_document (doc_kind=? AND doc_id=?)"]),
        (orderkpis._PICKS, {"site": SITE, "lo_text": "2026", "hi_text": "2027", "start": 0,
                            "end": 1},
         ["events USING INDEX events_order_picks (site=? AND event_time>? AND event_time<?)",
          "x USING INDEX exceptions_event (event_id=?)"]),
        (orderkpis._FILLS, {"site": SITE, "start_text": "2026", "end_text": "2027", "eps": 0},
         ["orders USING INDEX orders_received (site=? AND received_at>? AND received_at<?)",
          "l USING INDEX sqlite_autoindex_order_lines_1 (order_id=?)",
          "b USING INDEX backorders_line (order_id=? AND line=?)"]),
    ]:
        plan = " | ".join(row[3] for row in read(store, "EXPLAIN QUERY PLAN " + sql, params))
        assert all(f"SEARCH {use}" in plan for use in uses), plan
        assert "SCAN orders" not in plan and "SCAN events" not in plan, plan


def test_buckets_cover_the_range_without_gaps() -> None:
    for period in ("day", "week", "month"):
        for tz in ("UTC", "Europe/Berlin", "America/Santiago", "Pacific/Apia"):
            window = span("2025-12-20", "2026-12-31", period, tz)
            assert window.buckets[0].start == window.start
            assert window.buckets[-1].end == window.end
            assert all(a.end == b.start for a, b in zip(
                window.buckets, window.buckets[1:], strict=False))
            assert all(b.start < b.end for b in window.buckets)
    # Santiago skips midnight at the start of DST (6 Sep 2026): that day starts at 01:00
    sep = span("2026-09-06", "2026-09-07", "day", "America/Santiago")
    assert sep.local(sep.buckets[0].start) == "2026-09-06T01:00:00.000-03:00"
    assert sep.buckets[0].label == "2026-09-06"


def test_the_benchmark_runs_small() -> None:
    found = kpibench.run(days=3, receipts=40, counts=10, repeat=1, batches=2)
    assert found["posted_counts"] == 30 and found["ira_30d"]["counts"] == 30
    assert 0 < found["d2s_30d"]["timed_units"] <= found["d2s_30d"]["units"]
    assert found["apply_movements_per_s_with_index"] > 0
