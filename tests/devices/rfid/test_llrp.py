"""LLRP through sllurp (optional GPL extra): recorded RO_ACCESS_REPORT bytes into its decoder."""

from __future__ import annotations

import ast
import random
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from floorsync.devices.base import TagRead
from tests.devices.rfid.llrp_bytes import T0, capture

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[3]

sllurp_llrp = pytest.importorskip(
    "sllurp.llrp", reason="sllurp (optional GPL-3.0 extra floorsync[llrp]) is not installed"
)

from floorsync.devices.rfid.llrp import LlrpStreamDecoder, LlrpTagReader  # noqa: E402

EXPECTED = [
    ("3074257BF7194E4000001A85", 1, -55.0, T0 + 250_000, 3),
    ("3114257BF4499602D2000000", 2, -61.0, T0 + 20_000, 1),
    ("E2003411B802011820000D4E0000ABCD", 4, -69.25, T0 + 1_000_000, 2),  # ImpinjPeakRSSI wins
]


def recorded() -> bytes:
    return bytes.fromhex((DATA / "ro_access_reports.hex").read_text().replace("\n", ""))


def summary(reads: list[TagRead]) -> list[tuple[str, int, float | None, datetime, int]]:
    return [(r.epc, r.antenna, r.rssi, r.at, r.seen) for r in reads]


def expected() -> list[tuple[str, int, float | None, datetime, int]]:
    return [(e, a, r, datetime.fromtimestamp(us / 1e6, UTC), s) for e, a, r, us, s in EXPECTED]


def test_data_file_is_the_documented_capture() -> None:
    assert recorded() == capture()


def test_stream_decoder_in_random_slices() -> None:
    data = recorded()
    rng = random.Random(7)
    decoder = LlrpStreamDecoder("dock-1")
    reads, errors = [], []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 17)
        parsed = decoder.feed(data[pos : pos + step])
        reads += parsed.reads
        errors += parsed.errors
        pos += step
    assert summary(reads) == expected()
    assert all(r.reader == "dock-1" for r in reads)
    assert len(errors) == 1 and "no EPC" in errors[0].reason  # the report without an EPC
    assert decoder.pending == 0 and decoder.finish().errors == []


def test_truncation_and_garbage() -> None:
    data = recorded()
    decoder = LlrpStreamDecoder("d")
    assert len(decoder.feed(data[:-5]).reads) == 3
    assert "truncated" in decoder.finish().errors[0].reason
    garbage = LlrpStreamDecoder("d").feed(b"GET / HTTP/1.1\r\n\r\n")
    assert garbage.reads == [] and "not an LLRP header" in garbage.errors[0].reason
    # A well-framed report sllurp cannot decode is skipped, the next one still counts.
    broken = bytes.fromhex("043d0000000e00000009ffff0000")
    parsed = LlrpStreamDecoder("d").feed(broken + data)
    assert len(parsed.reads) == 3 and "undecodable" in parsed.errors[0].reason


def test_sllurps_own_client_protocol_path() -> None:
    """The bytes through LLRPReaderClient.raw_data_received, as sllurp's own tests do."""
    from floorsync.devices.rfid.llrp import reads_from_tag_reports

    client = sllurp_llrp.LLRPReaderClient(
        "127.0.0.1", config=sllurp_llrp.LLRPReaderConfig({"start_inventory": False})
    )
    reads: list[TagRead] = []
    client.add_tag_report_callback(
        lambda _c, tags: reads.extend(reads_from_tag_reports("dock-1", tags).reads)
    )
    client.llrp.state = sllurp_llrp.LLRPReaderState.STATE_INVENTORYING
    ours, theirs = socket.socketpair()  # a real socket for sllurp's answers (KEEPALIVE_ACK)
    client._socket = ours
    try:
        data = recorded()
        client.raw_data_received(data[:23])  # split mid-message: sllurp keeps the partial
        client.raw_data_received(data[23:])
        theirs.settimeout(2)
        answer = theirs.recv(64)
    finally:
        ours.close()
        theirs.close()
    assert summary(reads) == expected()
    assert answer[:2] == bytes.fromhex("0448")  # LLRP v1 KEEPALIVE_ACK (type 72)


def test_reader_unreachable_is_offline_and_stops() -> None:
    states: list[bool] = []
    stop = threading.Event()
    reader = LlrpTagReader("127.0.0.1", name="nowhere", port=1, timeout=0.5,
                           min_backoff=0.05, max_backoff=0.1)
    thread = threading.Thread(target=reader.run, args=(print, stop, states.append))
    thread.start()
    threading.Timer(0.5, stop.set).start()
    thread.join(timeout=5)
    assert not thread.is_alive() and states == [False]


def test_sllurp_is_imported_only_inside_devices_rfid_llrp() -> None:
    """Licence isolation: nothing of ours imports sllurp, and devices.rfid.llrp only lazily
    (the edge's reader factory, inside the function that builds an LLRP reader)."""
    offenders = []
    lazy_ok = {ROOT / "edge" / "readers.py"}
    for path in sorted((ROOT / "devices").rglob("*.py")) + sorted((ROOT / "edge").rglob("*.py")):
        if path == ROOT / "devices" / "rfid" / "llrp.py":
            continue
        tree = ast.parse(path.read_text())
        nodes = tree.body if path in lazy_ok else list(ast.walk(tree))  # top level only there
        for node in nodes:
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            if any(n.startswith(("sllurp", "floorsync.devices.rfid.llrp")) for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    tree = ast.parse((ROOT / "devices" / "rfid" / "llrp.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not any("sllurp" in ast.dump(n) for n in top_level)  # lazily, inside functions
