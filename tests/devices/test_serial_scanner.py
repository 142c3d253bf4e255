"""SerialScanner through real pyserial: pseudo-terminals (raw slave) and `loop://`."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.devices.base import DeviceError, DeviceGone, ScanRead
from floorsync.devices.framing import FrameDecoder
from floorsync.devices.serial_scanner import HONEYWELL_GOOD_READ, SerialScanner
from floorsync.devices.sim import ScriptedScanner, gs1_label, open_pty


@pytest.fixture
def pty() -> Iterator[tuple[ScriptedScanner, str]]:
    master, path = open_pty()
    device = ScriptedScanner(master)
    yield device, path
    device.unplug()


def test_codes_typed_arrive_as_scan_reads(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    stop = threading.Event()
    with SerialScanner(path, name="hh-1") as scanner:
        reads = scanner.read_frames(stop)
        label = gs1_label("09501101530003", lot="L1", serial="S9")
        device.type(label)
        device.type("]E04006381333931")
        first, second = next(reads), next(reads)
    assert first.device == "hh-1"
    assert first.symbology == "]C1"
    assert first.text == label[3:]
    assert "\x1d" in (first.text or "")
    assert first.error is None and first.at.tzinfo is not None
    assert (second.symbology, second.text) == ("]E0", "4006381333931")


def test_split_writes_and_garbage_do_not_raise(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    stop = threading.Event()
    with SerialScanner(path, name="hh-1", decoder=FrameDecoder(suffix=b"\r\n")) as scanner:
        reads = scanner.read_frames(stop)
        device.send(b"]C1ABC\r")
        device.send(b"\n\xff\xfe\x00\r\n")
        device.send(b"OK\r\n")
        got = [next(reads) for _ in range(3)]
    assert got[0].text == "ABC"
    assert got[1].text is None and got[1].error and "undecodable" in got[1].error
    assert got[2].text == "OK" and got[2].error is None


def test_silence_ends_a_partial_frame_as_truncated(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    with SerialScanner(path, name="hh-1") as scanner:
        reads = scanner.read_frames(threading.Event())
        device.send(b"HALF")
        read = next(reads)
    assert read.text == "HALF" and read.error and "truncated" in read.error


def test_closing_master_raises_device_gone(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    scanner = SerialScanner(path, name="hh-1")
    scanner.open()
    reads = scanner.read_frames(threading.Event())
    device.type("A")
    assert next(reads).text == "A"
    device.unplug()
    with pytest.raises(DeviceGone):
        next(reads)
    assert not scanner.is_open
    assert issubclass(DeviceGone, DeviceError)


def test_unplug_mid_code_yields_it_truncated_first(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    scanner = SerialScanner(path, name="hh-1", inter_char_timeout=5.0)
    scanner.open()
    reads = scanner.read_frames(threading.Event())
    device.send(b"PARTIAL")
    unplug = threading.Timer(0.3, device.unplug)  # after the reader has taken the bytes
    unplug.start()
    read = next(reads)
    assert read.text == "PARTIAL" and "truncated" in (read.error or "")
    with pytest.raises(DeviceGone):
        next(reads)
    unplug.join()


def test_stop_ends_reading(pty: tuple[ScriptedScanner, str]) -> None:
    _, path = pty
    stop = threading.Event()
    stop.set()
    with SerialScanner(path, name="hh-1") as scanner:
        assert list(scanner.read_frames(stop)) == []


def test_open_missing_port_is_device_gone(tmp_path: Path) -> None:
    with pytest.raises(DeviceGone):
        SerialScanner(str(tmp_path / "nope"), name="x").open()


def test_exclusive_open_refuses_a_second_reader(pty: tuple[ScriptedScanner, str]) -> None:
    _, path = pty
    with SerialScanner(path, name="a"), pytest.raises(DeviceGone):
        SerialScanner(path, name="b").open()


def test_feedback_bytes_reach_the_scanner(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    with SerialScanner(path, name="a", good_read_feedback=HONEYWELL_GOOD_READ) as scanner:
        scanner.good_read()
        scanner.bad_read()  # not configured: sends nothing
        assert device.read_host() == b"\x1b7"


def test_loop_url_round_trip() -> None:
    stop = threading.Event()
    with SerialScanner("loop://", name="loop") as scanner:
        scanner.write(b"]C10109501101530003\rLOC:A-01-02\r")
        reads = scanner.read_frames(stop)
        first, second = next(reads), next(reads)
    assert (first.symbology, first.text) == ("]C1", "0109501101530003")
    assert (second.symbology, second.text) == (None, "LOC:A-01-02")


def test_write_when_closed_is_device_gone() -> None:
    with pytest.raises(DeviceGone):
        SerialScanner("loop://", name="loop").write(b"x")


def test_run_with_reopen_reports_offline_then_online(tmp_path: Path) -> None:
    """A by-id style symlink is repointed at a new pty, as udev does when a scanner comes back."""
    link = tmp_path / "usb-Honeywell-if00"
    master1, path1 = open_pty()
    link.symlink_to(path1)
    states: queue.Queue[bool] = queue.Queue()
    reads: queue.Queue[ScanRead] = queue.Queue()
    stop = threading.Event()
    scanner = SerialScanner(str(link), name="hh-1")
    thread = threading.Thread(
        target=scanner.run_with_reopen,
        args=(reads.put, stop, states.put),
        kwargs={"min_backoff": 0.05, "max_backoff": 0.2},
    )
    thread.start()
    try:
        assert states.get(timeout=5) is True
        ScriptedScanner(master1).type("FIRST")
        assert reads.get(timeout=5).text == "FIRST"
        os.close(master1)
        assert states.get(timeout=5) is False
        master2, path2 = open_pty()
        tmp = tmp_path / "new-link"
        tmp.symlink_to(path2)
        os.replace(tmp, link)
        assert states.get(timeout=5) is True
        ScriptedScanner(master2).type("SECOND")
        assert reads.get(timeout=5).text == "SECOND"
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert states.empty()  # one report per change, not per retry
    os.close(master2)


def test_run_with_reopen_stops_while_device_absent(tmp_path: Path) -> None:
    states: list[bool] = []
    stop = threading.Event()
    scanner = SerialScanner(str(tmp_path / "absent"), name="x")
    thread = threading.Thread(target=scanner.run_with_reopen, args=(print, stop, states.append))
    thread.start()
    threading.Timer(0.5, stop.set).start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert states == [False]
