"""Documents reach the edge through a real mosquitto: retained messages published before the edge
connects, versions, withdrawal (also while the edge was away), garbage beside good messages,
and checking that goes on with the broker down and across an edge restart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.edge.documents import Against, DocumentBook, book_for
from floorsync.edge.expected import Expected, encode_expected
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import GTIN_A, GTIN_B, doc_exceptions, line, order, receipt, topic
from tests.factories import event, events


def publish(url: str, *messages: tuple[str, bytes]) -> None:
    """What the central service does: retained QoS 1 messages, each PUBACKed by the broker."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, int(port))
    client.loop_start()
    try:
        for t, payload in messages:
            client.publish(t, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def doc(d: Expected) -> tuple[str, bytes]:
    return topic(d), encode_expected(d)


@contextmanager
def edge(path: Path, site: str, broker: str) -> Iterator[tuple[Outbox, Syncer, DocumentBook]]:
    with Outbox(path) as outbox:
        syncer = Syncer(outbox, site, "edge-1", SyncSettings(broker=broker, backoff_max_s=0.2))
        with syncer:
            yield outbox, syncer, syncer.documents


def versions(book: DocumentBook) -> dict[str, int]:
    return {s.doc.id: s.doc.version for s in book.open()}


def test_retained_documents_published_before_the_edge_connects_reach_it(
        tmp_path: Path, mosquitto: Mosquitto, site: str) -> None:
    publish(mosquitto.url, doc(receipt("ASN-1", line(24, GTIN_A), site=site, location="DOCK-1")),
            doc(receipt("ASN-2", line(2, GTIN_B), site=site)),
            doc(order("SO-1", line(1, GTIN_A), site=site)))
    path = tmp_path / "outbox.db"
    with edge(path, site, mosquitto.url) as (outbox, syncer, book):
        assert syncer.documents is book_for(outbox)  # the one book of this outbox
        wait_until(lambda: len(book.open()) == 3, 10, "three documents")
        assert book.by_label("ASN:ASN-1") == ("receipt", "ASN-1")
        assert syncer.stats.documents == 3
    with Outbox(path) as outbox:  # kept on disk before the broker had its PUBACK
        assert sorted(d.id for d in outbox.documents()) == ["ASN-1", "ASN-2", "SO-1"]


def test_versions_withdrawal_and_garbage_over_the_broker(tmp_path: Path, mosquitto: Mosquitto,
                                                         site: str) -> None:
    v1, v2 = (receipt("ASN-1", line(n, GTIN_A), version=n, site=site) for n in (1, 2))
    path = tmp_path / "outbox.db"
    with edge(path, site, mosquitto.url) as (outbox, syncer, book):
        wait_until(lambda: syncer.connected, 10, "connected")
        publish(mosquitto.url, doc(v2), doc(v1))  # the broker now retains v1: an older one
        wait_until(lambda: syncer.stats.documents == 2, 10, "both versions")
        assert versions(book) == {"ASN-1": 2}
        truncated = encode_expected(receipt("ASN-3", line(1, GTIN_A), site=site))[:-7]
        other_site = receipt("ASN-4", line(1, GTIN_A), site="elsewhere")
        publish(mosquitto.url,
                (topic(receipt("ASN-5", site=site)), b"\x00garbage{"),
                (topic(receipt("ASN-3", site=site)), truncated),
                (topic(other_site, site), encode_expected(other_site)),
                doc(receipt("ASN-6", line(1, GTIN_B), site=site)))
        wait_until(lambda: "ASN-6" in versions(book), 10, "the good one after the bad ones")
        outbox.add(events(3))  # and events still go out on the same connection
        wait_until(lambda: syncer.stats.events_sent == 3, 10, "events sent")
        reasons = [r for r, _ in doc_exceptions(outbox)]
        assert len(reasons) == 3 and "not JSON" in reasons[0] and "not JSON" in reasons[1]
        assert "site 'elsewhere'" in reasons[2]
    with edge(path, site, mosquitto.url) as (outbox, syncer, book):  # a new connection: the
        wait_until(lambda: syncer.stats.documents >= 3, 10, "the retained ones again")
        assert versions(book) == {"ASN-1": 2, "ASN-6": 1}  # retained v1 is still older
        publish(mosquitto.url, (topic(v1), b""))
        wait_until(lambda: "ASN-1" not in versions(book), 10, "the withdrawal")
        assert outbox.documents()[0].id == "ASN-6"


def test_a_withdrawal_while_the_edge_was_away_reaches_it(tmp_path: Path, mosquitto: Mosquitto,
                                                         site: str) -> None:
    """The edge's session is persistent: what is published while it is gone waits for it."""
    path = tmp_path / "outbox.db"
    asn = receipt("ASN-1", line(1, GTIN_A), site=site)
    publish(mosquitto.url, doc(asn))
    with edge(path, site, mosquitto.url) as (_, _, book):
        wait_until(lambda: "ASN-1" in versions(book), 10, "the receipt")
    publish(mosquitto.url, (topic(asn), b""), doc(receipt("ASN-2", line(1, GTIN_A), site=site)))
    with edge(path, site, mosquitto.url) as (outbox, _, book):
        assert "ASN-1" in versions(book)  # from disk, until the broker says otherwise
        wait_until(lambda: versions(book) == {"ASN-2": 1}, 10, "withdrawn, and the new one")
        assert [d.id for d in outbox.documents()] == ["ASN-2"]


def test_checking_goes_on_with_the_broker_down_and_after_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, site: str) -> None:
    path = tmp_path / "outbox.db"
    publish(mosquitto.url, doc(receipt("ASN-1", line(3, GTIN_A), site=site)))
    claim = [Against("receipt", "ASN-1")]

    def check(book: DocumentBook) -> str | None:
        (kept,) = book.keep([event(gtin=GTIN_A, lot=None)], claim, source="hh-1").events
        return None if kept.doc is None else kept.doc.check

    with edge(path, site, mosquitto.url) as (_, syncer, book):
        wait_until(lambda: "ASN-1" in versions(book), 10, "the receipt")
        assert check(book) == "expected"
        mosquitto.stop()
        wait_until(lambda: syncer.state == "retrying", 10, "the broker gone")
        assert check(book) == "expected"
    with edge(path, site, mosquitto.url) as (outbox, syncer, book):  # restarted, broker down
        assert syncer.state != "connected"
        assert [check(book), check(book)] == ["expected", "over"]
        mosquitto.start()  # the retained document comes again: the same version, no change
        wait_until(lambda: syncer.stats.documents >= 1, 15, "the retained document again")
        assert check(book) == "over"
        assert outbox.stats().backlog == 5  # every check kept its event, none was refused


class FailingOnce(DocumentBook):
    """A book whose database write fails once, as a full or broken disk would make it."""

    failed = False

    def receive(self, topic: str, payload: bytes) -> str:
        if "ASN-BAD" in topic and not self.failed:
            self.failed = True
            raise RecursionError("a failure deep inside")
        return super().receive(topic, payload)


def test_a_failure_keeping_a_document_does_not_silence_the_syncer(
        tmp_path: Path, mosquitto: Mosquitto, site: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        book = FailingOnce(outbox, site)
        with Syncer(outbox, site, "edge-1", SyncSettings(broker=mosquitto.url),
                    documents=book) as syncer:
            wait_until(lambda: syncer.connected, 10, "connected")
            publish(mosquitto.url, doc(receipt("ASN-BAD", site=site)),
                    doc(receipt("ASN-2", line(1, GTIN_A), site=site)))
            wait_until(lambda: "ASN-2" in versions(book), 10, "the next document")
            assert book.failed and "ASN-BAD" not in versions(book)
            assert "not kept" in doc_exceptions(outbox)[0][0]
            assert syncer.connected and syncer.stats.connects == 1
    assert "could not keep the document message" in caplog.text
