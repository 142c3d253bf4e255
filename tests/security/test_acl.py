"""deploy/mosquitto's ACL on a real mosquitto, for MQTT 3.1.1 and 5, with the devices' blocks
added as ``floorsync enroll`` adds them: a device writes and reads only its own topics at its own
site, a device without a block can do nothing, and the retained presence and expected lists stay
whose they are.

How "nothing arrived" is proved without waiting for a timeout: mosquitto handles one client's
packets in order and queues what it forwards to a subscriber in that order. So after a denied
publish has been PUBACKed, a permitted message (the sentinel) is published; whoever would have
received the denied one gets everything up to the sentinel, and the denied message is not
among it. MQTT 3.1.1 has no reason code in a PUBACK (the broker drops the message silently);
MQTT 5 answers 0x87 Not authorized, which is asserted. A device that may receive nothing at all
cannot be handed a sentinel; its own QoS 1 PUBACK serves instead (``nothing_arrives``): the
broker writes a client's packets in the order it queued them, so a message it had forwarded
before that PUBACK would have come before it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import MQTTProtocolVersion

from floorsync.edge import expected, wire
from floorsync.localbroker import Mosquitto
from tests.brokerkit import WAIT_S, Got, Peer, ProductionBroker
from tests.e2e.conftest import CentralProcess
from tests.server import helpers

NOT_AUTHORIZED = 0x87
SUCCESS = 0x00
NO_SUBSCRIBERS = 0x10  # MQTT 5: accepted, but no one subscribes to it
PASSWORDS = {"hh-07": "pw-07", "hh-08": "pw-08", "hh-09": "pw-09",
             "floorsync-central": "pw-central"}
A, B, CENTRAL = "hh-07", "hh-08", "floorsync-central"
NO_BLOCK = "hh-09"  # a broker login, but never enrolled in the ACL
SITE, OTHER_SITE = "wh1", "wh2"
PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
_ids = itertools.count(1)


def denied(peer: Peer, code: int) -> None:
    """A publish the ACL refuses: MQTT 5 says so in the PUBACK; MQTT 3.1.1 cannot."""
    assert code == (NOT_AUTHORIZED if peer.v5 else SUCCESS)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """deploy/mosquitto/floorsync.conf and floorsync.acl, verbatim but for paths and port, with
    a password file made by mosquitto_passwd, and A's and B's blocks (site wh1) added to a copy
    of the ACL by the function ``floorsync enroll`` uses."""
    with ProductionBroker.build(tmp_path, PASSWORDS, {A: SITE, B: SITE}) as broker:
        yield broker


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peers(broker: Mosquitto, protocol: str) -> Iterator[dict[str, Peer]]:
    made: dict[str, Peer] = {}
    try:
        for user in (A, B, CENTRAL):
            made[user] = fresh(broker, user, protocol)
        yield made
    finally:
        for peer in made.values():
            peer.close()


def fresh(broker: Mosquitto, user: str, protocol: str) -> Peer:
    """``user`` logged in with its password; asserted accepted."""
    made = Peer(broker.port, (user, PASSWORDS[user]), protocol=PROTOCOLS[protocol],
                name=f"acl-test-{user}")
    assert made.connected.get(timeout=WAIT_S) == 0, f"{user} was refused"
    return made


def test_a_cannot_publish_under_b_topics(peers: dict[str, Peer]) -> None:
    a, b, central = peers[A], peers[B], peers[CENTRAL]
    assert central.subscribe(f"{wire.TOPIC_ROOT}/+/+/events",
                             f"{wire.TOPIC_ROOT}/+/+/status") == [1, 1]
    assert b.subscribe(wire.acks_topic(SITE, B)) == [1]

    denied(a, a.publish(wire.events_topic(SITE, B), b"A as B: events"))
    denied(a, a.publish(wire.status_topic(SITE, B), b"A as B: status"))
    denied(a, a.publish(wire.acks_topic(SITE, B), b"A forges B's ack"))
    denied(a, a.publish(wire.acks_topic(SITE, A), b"A acks itself"))
    # the sentinel, on A's own topic: the central service gets it and nothing before it
    assert a.publish(wire.events_topic(SITE, A), b"A's own batch") == SUCCESS
    assert central.until(wire.events_topic(SITE, A), b"A's own batch") == [
        Got(wire.events_topic(SITE, A), b"A's own batch", False)]
    # B gets the central service's ack, and not A's forgery published before it
    assert central.publish(wire.acks_topic(SITE, B), b"central acks B") == SUCCESS
    assert b.until(wire.acks_topic(SITE, B), b"central acks B") == [
        Got(wire.acks_topic(SITE, B), b"central acks B", False)]


def test_a_cannot_read_b_acks(peers: dict[str, Peer]) -> None:
    a, b, central = peers[A], peers[B], peers[CENTRAL]
    assert a.subscribe(wire.acks_topic(SITE, A)) == [1]
    assert b.subscribe(wire.acks_topic(SITE, B)) == [1]
    # Granted or refused, depending on the broker and the protocol: what counts is delivery.
    for codes in (a.subscribe(wire.acks_topic(SITE, B)),
                  a.subscribe(f"{wire.TOPIC_ROOT}/+/+/acks"),
                  a.subscribe(f"{wire.TOPIC_ROOT}/#"),
                  a.subscribe("#")):
        assert codes == [1] or codes[0] >= 0x80, codes
    assert central.publish(wire.acks_topic(SITE, B), b"for B only") == SUCCESS
    assert central.publish(wire.acks_topic(SITE, A), b"for A") == SUCCESS
    assert b.until(wire.acks_topic(SITE, B), b"for B only")[-1].topic == wire.acks_topic(SITE, B)
    got = a.until(wire.acks_topic(SITE, A), b"for A")
    # A's own ack may come once per subscription that matches it; B's never comes
    assert {(g.topic, g.payload) for g in got} == {(wire.acks_topic(SITE, A), b"for A")}


def retained(broker: Mosquitto, protocol: str, user: str, filter_: str,
             sentinel: tuple[str, str]) -> list[Got]:
    """What a fresh subscriber of ``filter_`` is handed as retained. The broker queues those on
    the subscription, so a message published after it (the sentinel: (who, topic), not
    retained, on a topic of ``filter_``) comes after them."""
    reader, sender = fresh(broker, user, protocol), fresh(broker, sentinel[0], protocol)
    try:
        assert reader.subscribe(filter_) == [1]
        assert sender.publish(sentinel[1], b"sentinel") == SUCCESS
        return reader.until(sentinel[1], b"sentinel")[:-1]
    finally:
        reader.close()
        sender.close()


def test_a_cannot_overwrite_or_clear_b_retained_presence(
    peers: dict[str, Peer], broker: Mosquitto, protocol: str
) -> None:
    a, b = peers[A], peers[B]
    b_status = wire.status_topic(SITE, B)
    assert b.publish(b_status, b"B online", retain=True) in {SUCCESS, NO_SUBSCRIBERS}
    denied(a, a.publish(b_status, b"B offline, says A", retain=True))
    denied(a, a.publish(b_status, b"", retain=True))  # an empty retained message clears it
    # the central service reads presence: B's own is what it is handed
    got = retained(broker, protocol, CENTRAL, f"{wire.TOPIC_ROOT}/{SITE}/+/status",
                   (B, b_status))
    assert got == [Got(b_status, b"B online", True)]


def test_a_cannot_overwrite_or_withdraw_the_expected_lists(
    peers: dict[str, Peer], broker: Mosquitto, protocol: str
) -> None:
    a, central = peers[A], peers[CENTRAL]
    asn = expected.docs_topic(SITE, "receipt", "ASN-1")
    order = expected.docs_topic(SITE, "order", "SO-1")
    for topic in (asn, order):
        assert central.publish(topic, b"the list of " + topic.encode(), retain=True) in {
            SUCCESS, NO_SUBSCRIBERS}
    denied(a, a.publish(asn, b"a forged list", retain=True))
    denied(a, a.publish(order, b"", retain=True))  # withdrawal
    denied(a, a.publish(expected.docs_topic(SITE, "receipt", "FORGED"), b"new", retain=True))
    denied(a, a.publish(expected.docs_topic(OTHER_SITE, "receipt", "X"), b"new", retain=True))
    for user in (A, CENTRAL):
        got = retained(broker, protocol, user, expected.docs_filter(SITE),
                       (CENTRAL, expected.docs_topic(SITE, "receipt", "SENTINEL")))
        assert sorted(got, key=lambda g: g.topic) == [
            Got(order, b"the list of " + order.encode(), True),
            Got(asn, b"the list of " + asn.encode(), True),
        ]
    got = retained(broker, protocol, CENTRAL, expected.docs_filter(OTHER_SITE),
                   (CENTRAL, expected.docs_topic(OTHER_SITE, "receipt", "SENTINEL")))
    assert got == []


def test_a_does_all_of_its_own(peers: dict[str, Peer], broker: Mosquitto, protocol: str
                               ) -> None:
    a, central = peers[A], peers[CENTRAL]
    asn = expected.docs_topic(SITE, "receipt", "ASN-7")
    assert central.publish(asn, b"ASN-7 list", retain=True) in {SUCCESS, NO_SUBSCRIBERS}
    assert central.subscribe(f"{wire.TOPIC_ROOT}/+/+/events",
                             f"{wire.TOPIC_ROOT}/+/+/status") == [1, 1]
    assert a.subscribe(wire.acks_topic(SITE, A)) == [1]
    assert a.publish(wire.status_topic(SITE, A), b"A online", retain=True) == SUCCESS
    assert a.publish(wire.events_topic(SITE, A), b"A's batch") == SUCCESS
    assert central.until(wire.events_topic(SITE, A), b"A's batch") == [
        Got(wire.status_topic(SITE, A), b"A online", False),
        Got(wire.events_topic(SITE, A), b"A's batch", False),
    ]
    assert central.publish(wire.acks_topic(SITE, A), b"ack for A") == SUCCESS
    assert a.until(wire.acks_topic(SITE, A), b"ack for A") == [
        Got(wire.acks_topic(SITE, A), b"ack for A", False)]
    # its retained presence is kept, and the expected lists reach it
    got = retained(broker, protocol, CENTRAL, f"{wire.TOPIC_ROOT}/{SITE}/+/status",
                   (A, wire.status_topic(SITE, A)))
    assert got == [Got(wire.status_topic(SITE, A), b"A online", True)]
    assert retained(broker, protocol, A, expected.docs_filter(SITE),
                    (CENTRAL, expected.docs_topic(SITE, "receipt", "SENTINEL"))) == [
        Got(asn, b"ASN-7 list", True)]


def nothing_arrives(peer: Peer) -> None:
    """Nothing was forwarded to ``peer`` so far: its own QoS 1 publish (denied or not) is
    PUBACKed after anything the broker had queued for it, and paho hands over messages before
    the PUBACK that follows them."""
    peer.publish(f"{wire.TOPIC_ROOT}/barrier/{next(_ids)}", b"barrier")
    assert peer.received.empty(), peer.received.get_nowait()


def test_a_device_is_kept_to_its_site(
    peers: dict[str, Peer], broker: Mosquitto, protocol: str
) -> None:
    """A wh1 device can neither read wh2's expected lists (retained or live) nor publish as
    itself under wh2: the central service never receives it (it would apply it to wh2, the
    payload's site matching the topic's)."""
    a, central = peers[A], peers[CENTRAL]
    other = expected.docs_topic(OTHER_SITE, "receipt", "ASN-9")
    assert central.publish(other, b"wh2's list", retain=True) in {SUCCESS, NO_SUBSCRIBERS}
    for codes in (a.subscribe(expected.docs_filter(OTHER_SITE)),
                  a.subscribe(f"{wire.TOPIC_ROOT}/+/docs/#")):
        assert codes == [1] or codes[0] >= 0x80, codes
    assert central.publish(expected.docs_topic(OTHER_SITE, "order", "SO-9"), b"live",
                           retain=True) in {SUCCESS, NO_SUBSCRIBERS}
    assert a.subscribe(wire.acks_topic(SITE, A)) == [1]
    assert central.publish(wire.acks_topic(SITE, A), b"sentinel for A") == SUCCESS
    assert a.until(wire.acks_topic(SITE, A), b"sentinel for A") == [
        Got(wire.acks_topic(SITE, A), b"sentinel for A", False)]  # neither wh2 list came

    assert central.subscribe(f"{wire.TOPIC_ROOT}/+/+/events",
                             f"{wire.TOPIC_ROOT}/+/+/status") == [1, 1]
    denied(a, a.publish(wire.events_topic(OTHER_SITE, A), b"A at wh2"))
    denied(a, a.publish(wire.status_topic(OTHER_SITE, A), b"A online at wh2", retain=True))
    denied(a, a.publish(expected.docs_topic(OTHER_SITE, "receipt", "X"), b"x", retain=True))
    assert a.publish(wire.events_topic(SITE, A), b"A at wh1") == SUCCESS  # the sentinel
    assert central.until(wire.events_topic(SITE, A), b"A at wh1") == [
        Got(wire.events_topic(SITE, A), b"A at wh1", False)]
    # and no presence of A at wh2 was kept
    assert retained(broker, protocol, CENTRAL, f"{wire.TOPIC_ROOT}/+/+/status",
                    (B, wire.status_topic(SITE, B))) == []


def test_a_device_without_a_block_can_do_nothing(
    peers: dict[str, Peer], broker: Mosquitto, protocol: str
) -> None:
    """Logged in (its password is good) but not enrolled in the ACL: it publishes nothing that
    reaches anyone, and receives nothing, not even on topics named after it."""
    central = peers[CENTRAL]
    nobody = fresh(broker, NO_BLOCK, protocol)
    try:
        assert central.publish(expected.docs_topic(SITE, "receipt", "ASN-3"), b"wh1's list",
                               retain=True) in {SUCCESS, NO_SUBSCRIBERS}
        for codes in (nobody.subscribe(wire.acks_topic(SITE, NO_BLOCK)),
                      nobody.subscribe(expected.docs_filter(SITE)),
                      nobody.subscribe("#")):
            assert codes == [1] or codes[0] >= 0x80, codes
        assert central.publish(wire.acks_topic(SITE, NO_BLOCK), b"an ack") == SUCCESS
        nothing_arrives(nobody)  # neither the retained list nor the ack

        assert central.subscribe(f"{wire.TOPIC_ROOT}/#") == [1]
        denied(nobody, nobody.publish(wire.events_topic(SITE, NO_BLOCK), b"its batch"))
        denied(nobody, nobody.publish(wire.status_topic(SITE, NO_BLOCK), b"online", retain=True))
        denied(nobody, nobody.publish(expected.docs_topic(SITE, "receipt", "X"), b"x",
                                      retain=True))
        assert peers[A].publish(wire.events_topic(SITE, A), b"A's batch") == SUCCESS
        got = central.until(wire.events_topic(SITE, A), b"A's batch")
        assert [g for g in got if NO_BLOCK in g.topic or g.topic.endswith("/X")] == []
    finally:
        nobody.close()


# --- the central service's own check, end to end -------------------------------------------


def test_central_rejects_counts_and_logs_a_batch_claiming_another_device(
    broker: Mosquitto, protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ACL lets A publish only on its own topic, but not decide what it says there: a
    batch on A's topic claiming B (or another site) is rejected by the real central service,
    counted on A, logged, and B's ledger stays as it was."""
    monkeypatch.setenv("FLOORSYNC_MQTT_USERNAME", CENTRAL)
    monkeypatch.setenv("FLOORSYNC_MQTT_PASSWORD", PASSWORDS[CENTRAL])
    server = CentralProcess(tmp_path / "central.db", broker.url, protocol)
    a, b = fresh(broker, A, protocol), fresh(broker, B, protocol)
    try:
        server.start()
        assert a.subscribe(wire.acks_topic(SITE, A)) == [1]
        assert b.subscribe(wire.acks_topic(SITE, B)) == [1]
        own = helpers.event(qty=2)
        b.publish(wire.events_topic(SITE, B), helpers.payload(SITE, B, own))
        assert ack(b, SITE, B) == {own.id: ("applied", None)}
        before = (devices(server)[B], server.get("stock")["items"], server.get("movements"))

        as_b = [helpers.event(qty=50, dst="A-01-01"), helpers.event(qty=7, dst="A-01-01")]
        assert a.publish(wire.events_topic(SITE, A),
                         helpers.payload(SITE, B, *as_b)) == SUCCESS  # its own topic
        as_wh2 = helpers.event(qty=3)
        a.publish(wire.events_topic(SITE, A), helpers.payload(OTHER_SITE, A, as_wh2))
        first, second = ack(a, SITE, A), ack(a, SITE, A)
        assert {i: s for i, (s, _) in (first | second).items()} == {
            e.id: "rejected" for e in [*as_b, as_wh2]}
        assert first[as_b[0].id][1] == (
            f"spoofed: payload device {SITE}/{B} on topic of device {SITE}/{A}")
        assert second[as_wh2.id][1] == (
            f"spoofed: payload device {OTHER_SITE}/{A} on topic of device {SITE}/{A}")

        # counted on the sender, the device the broker authenticated
        seen = devices(server)
        assert seen[A]["topic_mismatches"] == 2 and seen[A]["events"] == 0
        assert seen[A]["topic_mismatch_at"] is not None
        # B's ledger untouched: its row, the stock, the movements
        assert (seen[B], server.get("stock")["items"], server.get("movements")) == before
        assert seen[B]["topic_mismatches"] == 0 and set(seen) == {A, B}
        # kept with the reason, each listed as an open 'rejected' exception
        rejected = server.get("rejections")["items"]
        assert sorted(r["event_id"] for r in rejected) == sorted(e.id for e in [*as_b, as_wh2])
        assert {(r["topic"], r["site"], r["device"]) for r in rejected} == {
            (wire.events_topic(SITE, A), SITE, A)}
        kinds = [(x["kind"], x["status"]) for x in server.get("exceptions")["items"]]
        assert kinds == [("rejected", "open")] * 3

        # the log names the topic and what the payload claimed, never the payload
        log = server.database.with_suffix(".log").read_text()
        lines = [line for line in log.splitlines() if "topic/payload mismatch" in line]
        assert len(lines) == 2, log
        assert f"mismatch on {wire.events_topic(SITE, A)}: the payload claims site {SITE}" \
               f" device {B} (2 event(s) rejected; 1 such batch(es) from {SITE}/{A} so far)" \
               in lines[0]
        assert f"claims site {OTHER_SITE} device {A}" in lines[1] and "so far" in lines[1]
        for e in [*as_b, as_wh2]:
            assert e.id not in log
        assert '"events"' not in log and "09501101530003" not in log  # nothing of the batch
    finally:
        a.close()
        b.close()
        server.stop()


def ack(peer: Peer, site: str, device: str) -> dict[str, tuple[str, str | None]]:
    """The next application ack on ``device``'s acks topic: {event id: (status, reason)}."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = peer.received.get(timeout=max(deadline - time.monotonic(), 0.01))
        if got.topic == wire.acks_topic(site, device):
            decoded = wire.decode_ack(got.payload)
            assert decoded.device == device
            return {r.id: (r.status, r.reason) for r in decoded.results}


def devices(server: CentralProcess) -> dict[str, dict[str, Any]]:
    return {d["device"]: d for d in server.get("devices")}
