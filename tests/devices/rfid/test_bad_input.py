"""Bad input through every real transport, interleaved with good reads (issue 10).

Each test feeds garbage, truncation, wrong-length EPCs, impossible antennas, far-future and
far-past read times, duplicates and (MQTT) a 10 MB payload through the real path: mosquitto,
a listening HTTP server, pyserial on a pty, a file. The consumer does what the agent does: it
runs `edge.readcheck.check_read` on each read and reports refusals beside the reader's own
errors. Every good read arrives (duplicates too: readers do not deduplicate), every bad input
is reported exactly once with its reason, and the reader keeps going.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.http_receiver import HttpTagReceiver
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.lineformat import LineFormat
from floorsync.devices.rfid.mqtt_reader import MqttTagReader
from floorsync.devices.rfid.replay import ReplayReader
from floorsync.devices.rfid.serial_reader import SerialTagReader
from floorsync.devices.rfid.zebra import parse_zebra
from floorsync.devices.sim import ScriptedScanner, open_pty
from floorsync.edge.readcheck import check_read
from tests.brokers import Mosquitto

EPCS = [f"3074257BF7194E400000{n:04X}" for n in range(1, 10)]
TEN_MB = 10 * 1024 * 1024


def stamp(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat()


def impinj(epc: str, antenna: object = 1, at: str | None = None, **extra: Any) -> bytes:
    tag = {"epcHex": epc, "antennaPort": antenna, "peakRssiCdbm": -5000, **extra}
    return json.dumps({"timestamp": at or stamp(), "hostname": "impinj-1",
                       "eventType": "tagInventory", "tagInventoryEvent": tag}).encode()


class Consumer:
    """Runs a reader in a thread like the agent: check_read on every read, errors kept."""

    def __init__(self, reader: Any, run: Callable[..., None] | None = None) -> None:
        self.reads: queue.Queue[TagRead] = queue.Queue()
        self.errors: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.states: queue.Queue[bool] = queue.Queue()
        reader.on_error = lambda reason, raw: self.errors.put((reason, raw))
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run or reader.run, args=(self.on_read, self.stop, self.states.put)
        )
        self.thread.start()

    def on_read(self, read: TagRead) -> None:
        reason = check_read(read, datetime.now(UTC))
        if reason is None:
            self.reads.put(read)
        else:
            self.errors.put((f"refused: {reason}", read.epc.encode()))

    def take(self, reads: int, errors: int, timeout: float = 10) -> tuple[list[str], list[str]]:
        got = [self.reads.get(timeout=timeout).epc for _ in range(reads)]
        reasons = [self.errors.get(timeout=timeout)[0] for _ in range(errors)]
        return got, reasons

    def quiet(self, wait: float = 0.3, seen: list[str] | None = None) -> bool:
        """Nothing more arrives: every bad input was reported once, not again."""
        try:
            extra = self.errors.get(timeout=wait)
        except queue.Empty:
            return self.reads.empty()
        more = [extra]
        while not self.errors.empty():
            more.append(self.errors.get())
        raise AssertionError(f"reported again: {more} after {seen}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def matches(reasons: list[str], expected: list[str]) -> None:
    assert len(reasons) == len(expected), reasons
    for reason, want in zip(reasons, expected, strict=True):
        assert want in reason, (reason, want)


# -- MQTT -------------------------------------------------------------------------------------


@contextmanager
def publisher(broker: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


MQTT_BAD = [  # (payload, the reason reported for it)
    (b"x" * TEN_MB, "payload of 10485760 bytes over the 1048576-byte cap"),
    (b'{"timestamp": "2026-01-02T03:04:05Z", "tagInv', "truncated JSON"),
    (b"\x00\x01 binary junk", "invalid JSON"),
    (b"[" * 200_000, "invalid JSON: nested too deep"),
    (b'{"timestamp": ' + b"9" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
    (impinj("E28011"), "EPC of 6 hex digits (24 bits) is not a whole number of 16-bit words"),
    (impinj("E280" * 32), "longer than the largest EPC bank (496 bits)"),
    (impinj(EPCS[0], antenna=-1), "antennaPort below 0: -1"),
    (impinj(EPCS[0], antenna=70000), "antennaPort above 65535: 70000"),
    (impinj(EPCS[0], antenna=1.5), "antennaPort is not an integer: 1.5"),
    (impinj(EPCS[0], at=stamp(timedelta(days=2))), "refused: read time too far ahead"),
    (impinj(EPCS[0], at="2015-01-01T00:00:00Z"), "refused: read time too far behind"),
]


def test_mqtt_bad_messages_between_good_ones(mosquitto: Mosquitto, site: str) -> None:
    topic = f"{site}/impinj/dock-1/events"
    client_id = f"{site}-dock-1"
    consumer = Consumer(MqttTagReader(mosquitto.url, topic, parse_impinj, name="dock-1",
                                      client_id=client_id))
    try:
        assert consumer.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            messages = [impinj(EPCS[0])]
            for n, (payload, _) in enumerate(MQTT_BAD):
                messages += [payload, impinj(EPCS[1 + n % 3], antenna=n % 4)]
            messages.append(impinj(EPCS[4]))  # a duplicate: readers deliver it again
            messages.append(impinj(EPCS[4]))
            for payload in messages:
                pub.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        reads, reasons = consumer.take(len(messages) - len(MQTT_BAD), len(MQTT_BAD), timeout=20)
        assert consumer.quiet()
    finally:
        consumer.close()
    assert reads == [m for m in (_epc(p) for p in messages) if m is not None]
    matches(reasons, [reason for _, reason in MQTT_BAD])
    assert consumer.errors.empty()
    # Everything was acknowledged, the 10 MB message too: the same session gets none of it again.
    again = Consumer(MqttTagReader(mosquitto.url, topic, parse_impinj, name="dock-1",
                                   client_id=client_id))
    try:
        assert again.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            pub.publish(topic, impinj(EPCS[5]), qos=1).wait_for_publish(timeout=10)
        assert again.take(1, 0) == ([EPCS[5]], [])
        assert again.quiet()
    finally:
        again.close()


def _epc(payload: bytes) -> str | None:
    """The EPC of a good test message (None for the bad ones)."""
    if payload in {bad for bad, _ in MQTT_BAD}:
        return None
    return str(json.loads(payload)["tagInventoryEvent"]["epcHex"])


def test_mqtt_cap_is_a_parameter_and_a_commit_acknowledges_bad_messages(
    mosquitto: Mosquitto, site: str
) -> None:
    """With the durable path (a commit callable), a refused message is acknowledged too."""
    topic = f"{site}/zebra/fx/data"
    commits: list[int] = []
    reader = MqttTagReader(mosquitto.url, topic, lambda b: parse_zebra(b, "fx"), name="fx",
                           client_id=f"{site}-fx", max_payload=200)
    consumer = Consumer(reader, run=lambda on_read, stop, on_state: reader.run(
        on_read, stop, on_state, commit=lambda: commits.append(1)))
    good = json.dumps({"timestamp": stamp(), "data": {"idHex": EPCS[0], "antenna": 2}}).encode()
    big = json.dumps({"timestamp": stamp(), "data": {"idHex": EPCS[1], "pad": "x" * 300}})
    try:
        assert consumer.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            for payload in (good, big.encode(), good):
                pub.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        reads, reasons = consumer.take(2, 1)
    finally:
        consumer.close()
    assert reads == [EPCS[0], EPCS[0]]
    assert reasons == [f"payload of {len(big)} bytes over the 200-byte cap"]
    assert commits
    again = Consumer(MqttTagReader(mosquitto.url, topic, parse_zebra, name="fx",
                                   client_id=f"{site}-fx"))
    try:
        assert again.states.get(timeout=10) is True
        assert again.quiet(0.5)  # nothing redelivered
    finally:
        again.close()


def test_mqtt_a_parser_that_raises_does_not_silence_the_reader(
    mosquitto: Mosquitto, site: str
) -> None:
    topic = f"{site}/x/events"

    def fragile(data: bytes) -> Any:
        if data == b"boom":
            raise RecursionError("maximum recursion depth exceeded")
        return parse_impinj(data)

    consumer = Consumer(MqttTagReader(mosquitto.url, topic, fragile, name="x"))
    try:
        assert consumer.states.get(timeout=10) is True
        with publisher(mosquitto) as pub:
            for payload in (b"boom", impinj(EPCS[2])):
                pub.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        reads, reasons = consumer.take(1, 1)
    finally:
        consumer.close()
    assert reads == [EPCS[2]]
    assert reasons == ["parser failed: RecursionError: maximum recursion depth exceeded"]


# -- HTTP -------------------------------------------------------------------------------------


def post(port: int, body: bytes, headers: dict[str, str] | None = None) -> int | None:
    """POST over a real socket; None when the server hung up before answering."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/rfid", body=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
        return connection.getresponse().status
    except (ConnectionError, BrokenPipeError):
        return None
    finally:
        connection.close()


def test_http_bad_bodies_between_good_ones() -> None:
    receiver = HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="webhook",
                               max_body=1024 * 1024)
    consumer = Consumer(receiver)
    bad = [
        (b"x" * TEN_MB, (413, None), "body of 10485760 bytes over the 1048576-byte cap"),
        (impinj(EPCS[0])[:50], (400,), "truncated JSON"),
        (b"<xml/>", (400,), "invalid JSON"),
        (b"[" * 200_000, (400,), "invalid JSON: nested too deep"),
        (impinj("E2801160600002"), (400,), "not a whole number of 16-bit words"),
        (impinj("0" * 128), (400,), "longer than the largest EPC bank"),
        (impinj(EPCS[0], antenna=65536), (400,), "antennaPort above 65535"),
        (impinj(EPCS[0], antenna="-2"), (400,), "antennaPort below 0"),
        (impinj(EPCS[0], at=stamp(timedelta(hours=1))), (204,), "refused: read time too far ahead"),
        (impinj(EPCS[0], at=stamp(-timedelta(days=30))), (204,),
         "refused: read time too far behind"),
        (b"   ", (400,), "empty body"),
    ]
    try:
        assert consumer.states.get(timeout=5) is True
        port = receiver.port
        good = 0
        for n, (body, statuses, _) in enumerate(bad):
            assert post(port, body) in statuses, body[:60]
            assert post(port, impinj(EPCS[1 + n % 3], antenna=n)) == 204
            good += 1
        batch = b"[" + b",".join([impinj(EPCS[6]), impinj("E28011"), impinj(EPCS[6])]) + b"]"
        assert post(port, batch) == 204  # partly bad: the good reads are kept, no retry
        assert post(port, impinj(EPCS[7]), {"Content-Length": "lots"}) in (400, None)
        reads, reasons = consumer.take(good + 2, len(bad) + 2)
        assert consumer.quiet(seen=reasons)
    finally:
        consumer.close()
    assert reads == [EPCS[1 + n % 3] for n in range(len(bad))] + [EPCS[6]] * 2
    matches(reasons, [r for _, _, r in bad] + ["16-bit words", "bad Content-Length: 'lots'"])


# -- serial -----------------------------------------------------------------------------------


def test_serial_bad_lines_between_good_ones() -> None:
    master, path = open_pty()
    device = ScriptedScanner(master, suffix=b"\r\n")
    fmt = LineFormat.template("{epc},{antenna},{rssi},{time}")
    consumer = Consumer(SerialTagReader(path, name="desk-1", line_format=fmt, max_line=256,
                                        inter_char_timeout=0.1))
    bad = [
        (f"E28011,1,-50,{stamp()}", "not a whole number of 16-bit words"),
        (f"{'E280' * 32},1,-50,{stamp()}", "longer than the largest EPC bank"),
        (f",1,-50,{stamp()}", "EPC is empty"),
        (f"{EPCS[0]},70000,-50,{stamp()}", "antenna above 65535"),
        (f"{EPCS[0]},-3,-50,{stamp()}", "antenna below 0"),
        (f"{EPCS[0]},1.5,-50,{stamp()}", "antenna is not an integer"),
        (f"{EPCS[0]},1,-50,{stamp(timedelta(minutes=10))}", "refused: read time too far ahead"),
        (f"{EPCS[0]},1,-50,1970-01-02T00:00:00Z", "refused: read time too far behind"),
        (f"{EPCS[0]},1,-50,9999-12-31T23:59:59-14:00", "timestamp out of range"),
        ("x" * 1000, "overlong"),
        ("complete nonsense", "does not match"),
    ]
    try:
        assert consumer.states.get(timeout=5) is True
        device.type(f"{EPCS[0]},1,-50,{stamp()}")
        for n, (line, _) in enumerate(bad):
            device.type(line)
            device.type(f"{EPCS[1 + n % 3]},{n},-50,{stamp()}")
        device.type(f"{EPCS[4]},1,-50,{stamp()}")  # duplicates are delivered
        device.type(f"{EPCS[4]},1,-50,{stamp()}")
        reads, reasons = consumer.take(len(bad) + 3, len(bad))
        assert consumer.quiet()
    finally:
        consumer.close()
        device.unplug()
    assert reads == [EPCS[0]] + [EPCS[1 + n % 3] for n in range(len(bad))] + [EPCS[4]] * 2
    matches(reasons, [r for _, r in bad])


# -- replay -----------------------------------------------------------------------------------


def test_replay_bad_lines_between_good_ones(tmp_path: Path) -> None:
    def line(epc: str, t: float = 0.0, **extra: Any) -> bytes:
        return json.dumps({"t": t, "epc": epc, "antenna": 1, **extra}).encode()

    bad = [
        (line("E28011"), "not a whole number of 16-bit words"),
        (line("0" * 128), "longer than the largest EPC bank"),
        (line(EPCS[0], antenna=65536), "antenna above 65535"),
        (line(EPCS[0], antenna=-1), "antenna below 0"),
        (line(EPCS[0], seen=0), "seen below 1"),
        (line(EPCS[0], t=1e12), "t out of range"),
        (line(EPCS[0], t=2 * 86400), "refused: read time too far ahead"),
        (b"[" * 50_000, "invalid JSON: nested too deep"),
        (b'{"t": 1, "epc": ' + b"1" * 5000 + b"}", "invalid JSON: Exceeds the limit"),
        (line(EPCS[0])[:20], "invalid JSON"),
        (b"x" * 200_000, "over 65536 bytes (200001 bytes)"),
        (b"\xff\xfe", "invalid JSON"),
    ]
    lines = [line(EPCS[0])]
    for n, (text, _) in enumerate(bad):
        lines += [text, line(EPCS[1 + n % 3], t=0.001 * n)]
    lines += [line(EPCS[4]), line(EPCS[4])]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = ReplayReader(path, name="replay", realtime=False)
    consumer = Consumer(reader)
    try:
        assert reader.done.wait(10)
        reads, reasons = consumer.take(len(bad) + 3, len(bad))
        assert consumer.quiet()
    finally:
        consumer.close()
    assert reads == [EPCS[0]] + [EPCS[1 + n % 3] for n in range(len(bad))] + [EPCS[4]] * 2
    matches(reasons, [r for _, r in bad])
    assert reasons[0].startswith("line 2: ")  # the line is named


# -- LLRP -------------------------------------------------------------------------------------


def test_llrp_bad_reports_between_good_ones() -> None:
    pytest.importorskip("sllurp.llrp", reason="sllurp (optional GPL-3.0 extra) is not installed")
    from floorsync.devices.rfid.llrp import LlrpStreamDecoder
    from tests.devices.rfid.llrp_bytes import RO_ACCESS_REPORT, message, tag_report

    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    good = tag_report(EPCS[0], antenna=1, rssi=-50, last_us=now_us, count=1)
    reports = [
        good,
        tag_report("E28011", antenna=1, last_us=now_us),  # 24-bit EPCData
        good,
        tag_report(EPCS[1], antenna=2, last_us=2**64 - 1),  # a u64 timestamp past year 9999
        good,
        tag_report(EPCS[1], antenna=2, last_us=now_us + 3_600_000_000),  # an hour ahead
        tag_report(EPCS[1], antenna=2, last_us=now_us, count=0),
        good,
    ]
    stream = b"".join(message(RO_ACCESS_REPORT, n, r) for n, r in enumerate(reports))
    stream += b"GET / HTTP/1.1\r\n\r\n"  # garbage: the stream cannot resynchronise
    decoder = LlrpStreamDecoder("dock-1")
    parsed = decoder.feed(stream)
    now = datetime.now(UTC)
    refused = [check_read(r, now) for r in parsed.reads]
    assert [r.epc for r, why in zip(parsed.reads, refused, strict=True) if why is None] == [
        EPCS[0]
    ] * 4
    matches([e.reason for e in parsed.errors] + [w for w in refused if w],
            ["16-bit words", "timestamp out of range", "TagSeenCount below 1",
             "not an LLRP header", "read time too far ahead"])
