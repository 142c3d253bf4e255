"""The documents' publisher follows the store's committed state, whoever wrote it, and only one
publisher of a database publishes at a time (server/docfollow.py, server/docpublish.py).

Real parts on both engines (the ``store`` fixture: SQLite and PostgreSQL) and a real mosquitto:
changes committed by another store object or another process (never by the publisher's own
store, so no listener of its hears them) reach the retained topic within 2 s; two writers
changing one order as fast as they can never make its version on the broker go backwards; of
two publishers only one publishes, and the other takes over when it stops, its lock's session
dies, or its process is killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from floorsync.edge import expected as floor
from floorsync.localbroker import Mosquitto, free_port
from floorsync.server import docfollow, docpublish, orders, picking
from floorsync.server.docpublish import LEAD_CHECK_S, LEAD_RETRY_S, DocumentPublisher
from floorsync.server.ledger import Store
from floorsync.server.receipts import book_of
from floorsync.server.settings import Settings
from tests.pgkit import ADMIN
from tests.server.docfollowkit import (
    Floor,
    db_version,
    in_another_process,
    is_version,
    receipt_doc,
    retained,
    version,
)
from tests.server.orderkit import SITE, apply, order_doc, pick, receive, with_items

WITHIN_S = 2.0  # a committed change is on the broker within this


def settings(database: Path | str, broker: str) -> Settings:
    return Settings(database=database, broker=broker, auth=False)


@pytest.fixture
def writer(database: Path | str, store: Store) -> Iterator[Store]:
    """Another store object on the same database (its own connections, no listener of ours),
    with the documents' batch hooks as a replica installs them; master data loaded."""
    with_items(store)
    with Store(database) as other:
        picking.install(other)
        book_of(other)
        yield other


def started(database: Path | str, broker: str, store: Store) -> DocumentPublisher:
    return docfollow.publisher(settings(database, broker), store).start()


def until(condition: object, timeout: float, what: str) -> float:
    """Seconds it took until ``condition()``; fails after ``timeout``."""
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - began


def test_commits_by_other_stores_and_processes_reach_the_floor(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto
) -> None:
    publisher = started(database, mosquitto.url, store)
    live = Floor(mosquitto.port)
    try:
        assert publisher.wait_connected(10) and publisher.leading
        until(lambda: publisher.rounds == 1, 10, "the first round")
        lags: dict[str, float] = {}

        def seen(what: str, topic: str, table: str, ident: str, began: float) -> None:
            status, n = db_version(writer, table, ident)
            want = is_version(n) if status == "open" else (lambda p: p == b"")
            lags[what] = live.wait_for(topic, want, WITHIN_S + 3) - began
            assert lags[what] <= WITHIN_S, (what, lags[what])

        so1 = floor.docs_topic(SITE, "order", "SO-1")
        asn1 = floor.docs_topic(SITE, "receipt", "ASN-1")
        began = time.monotonic()  # an order with nothing in stock: all of it backordered
        orders.accept(writer, order_doc("SO-1", ("A", 5)))
        seen("order accepted (another store)", so1, "orders", "SO-1", began)
        began = time.monotonic()
        book_of(writer).accept(receipt_doc("ASN-1", ("A", 5)))
        seen("receipt accepted (another store)", asn1, "receipts", "ASN-1", began)
        began = time.monotonic()  # the receive fills the backorder: a line to pick at A-01
        assert apply(writer, receive("A", 5, "A-01")) == ["applied"]
        seen("backorder filled by a receive (another store)", so1, "orders", "SO-1", began)
        got = floor.decode_expected(live.seen[-1][1])
        assert [(ln.item.sku, ln.qty, ln.location) for ln in got.lines] == [("SKU-A", 5, "A-01")]
        began = in_another_process(database, "receipt", receipt_doc("ASN-2", ("B", 3)))
        seen("receipt accepted (another process)", floor.docs_topic(SITE, "receipt", "ASN-2"),
             "receipts", "ASN-2", began)
        began = in_another_process(database, "close", "ASN-1")
        seen("receipt closed (another process)", asn1, "receipts", "ASN-1", began)
        began = in_another_process(database, "cancel", "SO-1")
        seen("order cancelled (another process)", so1, "orders", "SO-1", began)
        print("lag from commit to the floor:", {k: round(v, 3) for k, v in lags.items()})
        assert retained(mosquitto.port) == {
            floor.docs_topic(SITE, "receipt", "ASN-2"):
                floor.encode_expected(book_of(writer).expected("ASN-2"))}  # type: ignore[arg-type]
        assert publisher.rounds == 1  # all of it followed, none of it from a full round
    finally:
        live.close()
        publisher.stop()


def test_versions_on_the_broker_never_go_backwards_with_two_writers(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto
) -> None:
    """Two store objects pick one order line by line as fast as they can, in two threads: every
    commit is a new version; the floor hears them in order only, and ends at the last."""
    apply(store, receive("A", 60, "A-01"))
    orders.accept(store, order_doc("SO-2", ("A", 60)))
    topic = floor.docs_topic(SITE, "order", "SO-2")
    # polled every 5 ms: most versions go out, each read after the one before it
    publisher = docfollow.publisher(settings(database, mosquitto.url), store, poll_s=0.005
                                    ).start()
    live = Floor(mosquitto.port)
    try:
        assert publisher.wait_connected(10)
        live.wait_for(topic, is_version(db_version(store, "orders", "SO-2")[1]))
        with Store(database) as third:
            picking.install(third)
            errors: list[BaseException] = []

            def picker(on: Store) -> None:
                try:
                    for _ in range(30):
                        assert apply(on, pick("SO-2", "A", 1, "A-01")) == ["applied"]
                        time.sleep(random.random() * 0.01)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=picker, args=(s,)) for s in (writer, third)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not errors, errors
        status, last = db_version(store, "orders", "SO-2")
        assert status == "open" and last == 61  # one version per pick
        live.wait_for(topic, is_version(last), WITHIN_S + 3)
        live.settle(0.5)
        heard = live.versions(topic)
        print(f"versions heard: {len(heard)} of {last}: {heard}")
        assert all(v is not None for v in heard)
        assert heard == sorted(heard), heard  # type: ignore[type-var]
        assert heard[-1] == last and len(heard) >= 10  # many versions went out
        assert version(retained(mosquitto.port)[topic]) == last
    finally:
        live.close()
        publisher.stop()


def test_one_publisher_publishes_and_the_other_takes_over_when_it_stops(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto
) -> None:
    with Store(database) as second_store:
        first = started(database, mosquitto.url, store)
        until(lambda: first.connected, 10, "the first publisher connected")
        second = started(database, mosquitto.url, second_store)
        try:
            time.sleep(2 * LEAD_RETRY_S + 0.5)  # the standby has tried, more than once
            assert first.leading and not second.leading and not second.connected
            live = Floor(mosquitto.port)
            orders.accept(writer, order_doc("SO-3", ("A", 1)))
            topic = floor.docs_topic(SITE, "order", "SO-3")
            live.wait_for(topic, is_version(1), WITHIN_S)
            assert first.published == 1 and second.published == 0
            first.stop()
            stopped = time.monotonic()
            took = until(lambda: second.connected and second.rounds == 1, 10, "takeover")
            print(f"takeover after a stop: {took:.2f} s")
            assert took <= LEAD_RETRY_S + 1.5
            assert second.published == 1  # its round: SO-3 again
            orders.cancel(writer, "SO-3", "test", None)
            assert live.wait_for(topic, lambda p: p == b"", WITHIN_S) - stopped <= took + WITHIN_S
            assert retained(mosquitto.port) == {}
            live.close()
        finally:
            second.stop()
            first.stop()


def test_a_holder_whose_lock_session_dies_steps_down(
    pg_url: str, mosquitto: Mosquitto
) -> None:
    """PostgreSQL: the lock lives with its session; a session the server ended (as when the
    holder's host vanished) ends the lead: the holder notices and stops publishing, and the lock
    is taken again (by the standby, or by the old holder once it reaches the database again,
    whichever tries first), by one of them only."""
    with Store(pg_url) as one, Store(pg_url) as two, Store(pg_url) as writer:
        with_items(writer)
        first = started(pg_url, mosquitto.url, one)
        until(lambda: first.connected, 10, "the first publisher connected")
        second = started(pg_url, mosquitto.url, two)
        try:
            lead = first._lead
            assert isinstance(lead, docfollow.PgLead)
            pid = lead.backend_pid()
            assert pid is not None
            lock = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                    " AND objid = %s AND objsubid = 2 AND granted AND database ="
                    f" (SELECT oid FROM pg_database WHERE datname = '{pg_url.rsplit('/', 1)[1]}')")
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                # the lock is there, held by that session, and by no other
                assert admin.execute(lock, docfollow.LOCK_KEY).fetchall() == [(pid,)]
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended = time.monotonic()
                until(lambda: not first.connected and first.leaderships == 1
                      and not first.leading, LEAD_CHECK_S + 1.5, "the old holder stepped down")
                took = until(lambda: sum(p.leading and p.connected and p.rounds > 0
                                         for p in (first, second)) == 1
                             and first.leaderships + second.leaderships == 2, 10, "a new holder")
                print(f"step down and a new holder after the session ended: "
                      f"{time.monotonic() - ended:.2f} s ({took:.2f} s after the step down)")
                (holder,) = admin.execute(lock, docfollow.LOCK_KEY).fetchall()
                assert holder != (pid,)
            assert took <= LEAD_RETRY_S + 1.5
            live = Floor(mosquitto.port)
            orders.accept(writer, order_doc("SO-4", ("A", 1)))
            live.wait_for(floor.docs_topic(SITE, "order", "SO-4"), is_version(1), WITHIN_S)
            live.close()
            time.sleep(LEAD_RETRY_S + 0.5)
            assert sum(p.leading for p in (first, second)) == 1  # still one
        finally:
            second.stop()
            first.stop()


HOLDER = """
import sys, time
from floorsync.server import docfollow
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings, database_of

database, broker = database_of(sys.argv[1]), sys.argv[2]
store = Store(database).open()
pub = docfollow.publisher(Settings(database=database, broker=broker, auth=False), store).start()
while not (pub.leading and pub.connected and pub.rounds):
    time.sleep(0.01)
print("leading", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_is_replaced(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto
) -> None:
    """The holder is another process, SIGKILLed: its lock goes with it (the PostgreSQL session
    ends, the flock is dropped by the kernel) and the standby here takes over."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(database), mosquitto.url],
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    standby = None
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "leading"
        standby = started(database, mosquitto.url, store)
        live = Floor(mosquitto.port)
        orders.accept(writer, order_doc("SO-5", ("A", 1)))
        topic = floor.docs_topic(SITE, "order", "SO-5")
        live.wait_for(topic, is_version(1), WITHIN_S)  # the other process published it
        assert not standby.leading and standby.published == 0
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        took = until(lambda: standby is not None and standby.connected and standby.rounds == 1,
                     10, "takeover")
        print(f"takeover after SIGKILL of the holder: {took:.2f} s")
        assert took <= LEAD_RETRY_S + 1.5
        orders.cancel(writer, "SO-5", "test", None)
        live.wait_for(topic, lambda p: p == b"", WITHIN_S)
        live.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if standby is not None:
            standby.stop()


def test_an_older_copy_published_by_another_is_replaced(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto
) -> None:
    """A copy older than the one last sent, published after it (a former holder still sending,
    an older floorsync): the current one goes again at once."""
    apply(store, receive("A", 10, "A-01"))
    orders.accept(writer, order_doc("SO-6", ("A", 4)))
    topic = floor.docs_topic(SITE, "order", "SO-6")
    publisher = started(database, mosquitto.url, store)
    live = Floor(mosquitto.port)
    try:
        live.wait_for(topic, is_version(1))
        old = live.seen[-1][1]
        apply(writer, pick("SO-6", "A", 1, "A-01"))
        live.wait_for(topic, is_version(2), WITHIN_S)
        stale = Floor(mosquitto.port)  # another publisher sends version 1 again, retained
        stale.client.publish(topic, old, qos=1, retain=True).wait_for_publish(10)
        stale.close()
        until(lambda: publisher.repaired == 1, WITHIN_S, "the stale copy replaced")
        live.wait_for(topic, is_version(2), WITHIN_S)
        assert publisher.wait_idle(10)
        assert version(retained(mosquitto.port)[topic]) == 2
        assert live.versions(topic)[-2:] == [1, 2]
    finally:
        live.close()
        publisher.stop()


def test_a_holder_that_cannot_reach_its_broker_gives_the_lead_up(
    database: Path | str, store: Store, writer: Store, mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas may name different broker nodes: the holder whose node is gone yields, and a
    standby whose node answers takes the lead and publishes."""
    monkeypatch.setattr(docpublish, "LEAD_UNREACHABLE_S", 1.5)
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    with Store(database) as second_store:
        first = started(database, dead, store)
        until(lambda: first.leading, 10, "the first publisher leading")
        second = started(database, mosquitto.url, second_store)
        try:
            took = until(lambda: second.leading and second.connected and second.rounds > 0,
                         1.5 + LEAD_CHECK_S + docpublish.LEAD_YIELD_S + 3, "the handover")
            print(f"handover from an unreachable broker: {took:.2f} s")
            assert not first.leading
            live = Floor(mosquitto.port)
            orders.accept(writer, order_doc("SO-7", ("A", 1)))
            live.wait_for(floor.docs_topic(SITE, "order", "SO-7"), is_version(1), WITHIN_S)
            live.close()
            time.sleep(docpublish.LEAD_YIELD_S + 1)  # the first may try again: it cannot win
            assert second.leading and not first.leading
        finally:
            second.stop()
            first.stop()
