"""HttpTagReceiver: real HTTP requests (urllib, http.client) to a real listening server."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.devices.rfid.http_receiver import HttpTagReceiver
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.zebra import parse_zebra
from tests.devices.rfid import running

DATA = Path(__file__).parent / "data"
EPC = "3074257BF7194E4000001A85"


class Running(running.Running[HttpTagReceiver]):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.reader.port}/rfid"

    def post(self, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def impinj_receiver() -> Iterator[Running]:
    running = Running(HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="webhook"))
    assert running.states.get(timeout=5) is True
    assert running.reader.listening.is_set()
    yield running
    running.close()


def event(epc: str = EPC, antenna: int = 1) -> dict[str, object]:
    return {
        "timestamp": "2026-01-02T03:04:05Z",
        "hostname": "impinj-14-1f-23",
        "eventType": "tagInventory",
        "tagInventoryEvent": {"epcHex": epc, "antennaPort": antenna, "peakRssiCdbm": -4500},
    }


def test_webhook_array_and_json_lines_answer_204(impinj_receiver: Running) -> None:
    status, _ = impinj_receiver.post(json.dumps([event(), event(antenna=2)]).encode())
    assert status == 204
    lines = (json.dumps(event(antenna=3)) + "\n" + json.dumps(event(antenna=4)) + "\n").encode()
    status, _ = impinj_receiver.post(lines, "application/x-ndjson")
    assert status == 204
    reads = [impinj_receiver.reads.get(timeout=5) for _ in range(4)]
    assert [r.antenna for r in reads] == [1, 2, 3, 4]
    assert all(r.epc == EPC and r.rssi == -45.0 for r in reads)
    assert impinj_receiver.errors.empty()


def test_garbage_answers_400_with_reason(impinj_receiver: Running) -> None:
    status, text = impinj_receiver.post(b"<xml>not json</xml>")
    assert status == 400 and "invalid JSON" in text
    status, text = impinj_receiver.post(json.dumps(event())[:40].encode())
    assert status == 400 and "truncated JSON" in text
    status, text = impinj_receiver.post(json.dumps(event(epc="NOTHEX")).encode())
    assert status == 400 and "not hex" in text
    status, text = impinj_receiver.post(b"   ")
    assert status == 400 and "empty" in text
    assert [impinj_receiver.errors.get(timeout=5)[0] for _ in range(4)][3] == "empty body"
    assert impinj_receiver.reads.empty()
    # the server is still there
    assert impinj_receiver.post(json.dumps(event()).encode())[0] == 204
    assert impinj_receiver.reads.get(timeout=5).epc == EPC


def test_partly_bad_batch_keeps_the_good_reads(impinj_receiver: Running) -> None:
    body = json.dumps([event(), event(epc="XYZ"), {"eventType": "inventoryStatus",
                                                   "inventoryStatusEvent": {}}]).encode()
    assert impinj_receiver.post(body)[0] == 204  # a retry would only duplicate the good read
    assert impinj_receiver.reads.get(timeout=5).epc == EPC
    reason, raw = impinj_receiver.errors.get(timeout=5)
    assert "not hex" in reason and b"XYZ" in raw


def test_other_methods_and_missing_length(impinj_receiver: Running) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(impinj_receiver.url, timeout=5)
    assert info.value.code == 405
    connection = http.client.HTTPConnection("127.0.0.1", impinj_receiver.reader.port, timeout=5)
    connection.putrequest("POST", "/rfid")
    connection.endheaders()
    assert connection.getresponse().status == 411
    connection.close()


def test_zebra_http_post(tmp_path: Path) -> None:
    running = Running(HttpTagReceiver("127.0.0.1", 0, parse_zebra, name="fx"))
    try:
        assert running.states.get(timeout=5) is True
        status, _ = running.post((DATA / "zebra_stream.json").read_bytes())
        reads = [running.reads.get(timeout=5) for _ in range(3)]
    finally:
        running.close()
    assert status == 204
    assert [r.seen for r in reads] == [2, 1, 5]
    assert running.errors.qsize() == 3


def test_port_taken_is_offline_until_stopped() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        running = Running(HttpTagReceiver("127.0.0.1", port, parse_impinj, name="x",
                                          min_backoff=0.05, max_backoff=0.1))
        try:
            assert running.states.get(timeout=5) is False
        finally:
            running.close()
    assert running.states.empty()
