"""The store: idempotent apply, each movement type's effect on stock, counts, rejections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from floorsync.edge import wire
from floorsync.server.ledger import Store
from tests.server.helpers import decoded, event

SITE, DEV = "wh1", "hh-01"


def on_hand(store: Store) -> dict[tuple[str, str, str | None], float]:
    return {(r.item, r.location, r.lot): r.quantity for r in store.stock()}


def apply(store: Store, *events: wire.Event) -> list[str]:
    results = store.apply_batch(decoded(SITE, DEV, *events), source="mqtt")
    return [r.status for r in results]


G = "09501101530003"


def test_apply_and_duplicates_across_batches(store: Store) -> None:
    first = event("receive", qty=5, dst="DOCK-1")
    assert apply(store, first) == ["applied"]
    assert apply(store, first, event("receive", qty=2, dst="DOCK-1")) == ["duplicate", "applied"]
    assert on_hand(store) == {(G, "DOCK-1", None): 7}
    assert store.summary()["events"] == 2
    assert len(store.movements()) == 2


def test_duplicate_within_one_batch_applies_once(store: Store) -> None:
    e = event("receive", qty=3)
    assert apply(store, e, e) == ["applied", "duplicate"]
    assert on_hand(store) == {(G, "DOCK-1", None): 3}


@pytest.mark.parametrize(
    ("kind", "src", "dst", "qty", "expected"),
    [
        ("receive", None, "DOCK-1", 4, {"DOCK-1": 14}),
        ("putaway", "DOCK-1", "A-01", 4, {"DOCK-1": 6, "A-01": 4}),
        ("move", "DOCK-1", "B-02", 1, {"DOCK-1": 9, "B-02": 1}),
        ("pick", "DOCK-1", None, 2, {"DOCK-1": 8}),
        ("pick", "DOCK-1", "TOTE-9", 2, {"DOCK-1": 8, "TOTE-9": 2}),
        ("pack", "DOCK-1", None, 3, {"DOCK-1": 7}),
        ("pack", "DOCK-1", "PACK-1", 3, {"DOCK-1": 7, "PACK-1": 3}),
        ("ship", "DOCK-1", None, 10, {}),
        ("return", None, "DOCK-1", 1, {"DOCK-1": 11}),
        ("adjust", None, "DOCK-1", -3, {"DOCK-1": 7}),
        ("adjust", "DOCK-1", None, 2, {"DOCK-1": 12}),
        ("observe", None, "DOCK-1", 1, {"DOCK-1": 10}),
    ],
)
def test_movement_types(
    store: Store, kind: str, src: str | None, dst: str | None, qty: float,
    expected: dict[str, float],
) -> None:
    apply(store, event("receive", qty=10, dst="DOCK-1"))
    assert apply(store, event(kind, qty=qty, src=src, dst=dst)) == ["applied"]
    assert {loc: q for (_, loc, _), q in on_hand(store).items()} == expected


def test_ledger_rows_are_signed_and_keep_lot(store: Store) -> None:
    e = event("move", lot="L7", qty=2, src="A", dst="B")
    apply(store, e)
    rows = [(m.event_id, m.location, m.qty, m.lot, m.type) for m in store.movements()]
    assert rows == [(e.id, "A", -2, "L7", "move"), (e.id, "B", 2, "L7", "move")]
    assert on_hand(store) == {(G, "A", "L7"): -2, (G, "B", "L7"): 2}


def test_negative_stock_is_allowed(store: Store) -> None:
    assert apply(store, event("pick", qty=5, src="A-01", dst=None)) == ["applied"]
    assert on_hand(store) == {(G, "A-01", None): -5}


def test_item_key_prefers_sku_and_sscc(store: Store) -> None:
    sku = wire.Event(wire.new_event_id(), 1, wire.local_now(), "receive",
                     wire.Item(gtin=G, sku="SKU-1"), 1, to="D")
    sscc = wire.Event(wire.new_event_id(), 2, wire.local_now(), "receive",
                      wire.Item(sscc="106141412345678908"), 1, to="D")
    apply(store, sku, sscc)
    assert set(on_hand(store)) == {("SKU-1", "D", None), ("106141412345678908", "D", None)}


def count(location: str, *seen: tuple[str, str | None, float]) -> wire.Event:
    lines = tuple(wire.CountLine(wire.Item(gtin=g, lot=lot), q) for g, lot, q in seen)
    return event("count", dst=None, count=wire.Count(location, lines))


def test_count_sets_on_hand_to_what_was_seen(store: Store) -> None:
    other = "04006381333931"
    apply(
        store,
        event("receive", qty=10, dst="A-01"),
        event("receive", gtin=other, qty=4, dst="A-01"),
        event("receive", lot="L1", qty=1, dst="A-01"),
        event("receive", qty=7, dst="B-01"),
    )
    # In the same batch as the count: a pick it must see.
    pick = event("pick", qty=2, src="A-01", dst=None)
    c = count("A-01", (G, None, 6), (G, "L2", 3))
    assert apply(store, pick, c) == ["applied", "applied"]
    assert on_hand(store) == {
        (G, "A-01", None): 6,  # 8 on hand after the pick, counted 6
        (G, "A-01", "L2"): 3,  # found, not expected
        (G, "B-01", None): 7,  # another location: untouched
    }
    deltas = {(m.item, m.lot): m.qty for m in store.movements() if m.event_id == c.id}
    assert deltas == {(G, None): -2, (G, "L1"): -1, (G, "L2"): 3, (other, None): -4}
    assert all(m.type == "count" for m in store.movements() if m.event_id == c.id)


def test_count_of_negative_line_brings_it_to_zero(store: Store) -> None:
    apply(store, event("pick", qty=3, src="A-01", dst=None))
    apply(store, count("A-01"))
    assert on_hand(store) == {}


def test_invalid_events_are_rejected_beside_good_ones(store: Store) -> None:
    good = event("receive", qty=2)
    body = {
        "v": 1, "site": SITE, "device": DEV, "sent_at": wire.utc_now(),
        "events": [wire.event_to_dict(good),
                   {"id": "0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c", "seq": 9, "type": "teleport"},
                   {"seq": 3}],
    }
    raw = json.dumps(body)
    results = store.apply_batch(wire.decode_batch(raw), source="http", raw=raw)
    assert [(r.id, r.status) for r in results] == [
        (good.id, "applied"), ("0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c", "rejected")
    ]
    assert "type must be one of" in (results[1].reason or "")
    rejected = store.rejections()
    assert len(rejected) == 2
    assert rejected[0].event_id == "0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c"
    assert rejected[1].event_id is None and rejected[1].source == "http"
    assert "teleport" in rejected[0].payload


def test_record_rejection_one_row_per_id_and_truncates(store: Store) -> None:
    store.record_rejection(source="mqtt", reason="not JSON", payload=b"\xff" * 100_000)
    store.record_rejection(source="mqtt", reason="spoofed", payload="{}", topic="t",
                           site="s", device="d", event_ids=["a", "b"])
    rows = store.rejections()
    assert [(r.event_id, r.reason) for r in rows] == [
        (None, "not JSON"), ("a", "spoofed"), ("b", "spoofed")
    ]
    assert len(rows[0].payload) == 64 * 1024
    assert [r.id for r in store.rejections(after=rows[0].id, limit=1)] == [rows[1].id]


def test_devices_track_last_seq_and_presence(store: Store) -> None:
    a, b = event(), event()
    apply(store, b, a)
    apply(store, a)
    store.update_presence(SITE, DEV, wire.Status("online", wire.utc_now(), backlog=4, last_seq=1))
    (dev,) = store.devices()
    assert (dev.site, dev.device, dev.events, dev.last_seq) == (SITE, DEV, 2, max(a.seq, b.seq))
    assert dev.online is True and dev.backlog == 4 and dev.last_seen is not None


def test_presence_keeps_the_last_backlog_figures_while_offline(store: Store) -> None:
    online = wire.Status("online", "2026-03-01T10:00:10.000Z", 40, 90, 12.5,
                         "2026-03-01T10:00:10.000Z")
    store.update_presence(SITE, DEV, online)
    # the last will, made at connect (10:00:00): older figures than those kept
    will = wire.Status("offline", "2026-03-01T10:05:00.000Z", 3, 50, 0.2,
                       "2026-03-01T10:00:00.000Z")
    store.update_presence(SITE, DEV, will)
    (dev,) = store.devices()
    assert (dev.online, dev.status_at) == (False, will.at)
    assert (dev.backlog, dev.oldest_unsynced_s, dev.backlog_at, dev.last_seq) == (
        40, 12.5, "2026-03-01T10:00:10.000Z", 90)
    # an older edge's will has no figures at all: still kept
    store.update_presence(SITE, DEV, wire.Status("offline", "2026-03-01T10:06:00.000Z"))
    assert store.devices()[0].backlog == 40
    # a clean stop says offline with fresh figures (measured then): they replace the kept ones
    stop = wire.Status("offline", "2026-03-01T11:07:00.000+01:00", 41, 91, 13.0)  # 10:07Z
    store.update_presence(SITE, DEV, stop)
    (dev,) = store.devices()
    assert (dev.backlog, dev.oldest_unsynced_s, dev.backlog_at) == (41, 13.0, stop.at)


def test_reopened_database_keeps_everything(tmp_path: Path) -> None:
    e = event("receive", qty=5)
    with Store(tmp_path / "x.db") as store:
        apply(store, e)
        store.record_rejection(source="mqtt", reason="bad", payload=b"x")
    with Store(tmp_path / "x.db") as store:
        assert on_hand(store) == {(G, "DOCK-1", None): 5}
        assert apply(store, e) == ["duplicate"]
        assert store.summary() == {
            "events": 1, "movements": 1, "rejections": 1, "devices": 1, "stock_lines": 1,
            "open_exceptions": 1,  # the rejection, listed as an exception
        }


def test_wal_and_full_sync(sqlite_store: Store) -> None:
    conn = sqlite_store._reader()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
