"""WedgeScanner and WedgeHub on real pipes read by evdev's own reader (`PipeEvents`).

A device path here is backed by an `os.pipe()`: "plugging" a device makes its path openable and
returns the pipe's write end, on which the test writes packed `struct input_event` records the
way the kernel would; closing the write end is what an unplug looks like to the reader.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from floorsync.devices.base import DeviceError, DeviceGone, ScanRead
from floorsync.devices.keymap import GS, KEY_A, KEY_B, KEY_ENTER, text_to_keys
from floorsync.devices.wedge import EVENT_SIZE, PipeEvents, WedgeHub, WedgeScanner, pack_events

PATH_A = "/dev/input/by-id/usb-Honeywell_1900-event-kbd"
PATH_B = "/dev/input/by-id/usb-Zebra_DS2208-event-kbd"


class PipeBus:
    """Device paths whose devices are pipes: `plug` one, write events, close to unplug."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, list[int]] = {}
        self.attempts: dict[str, int] = {}

    def plug(self, path: str) -> int:
        read_fd, write_fd = os.pipe()
        with self._lock:
            self._ready.setdefault(path, []).append(read_fd)
        return write_fd

    def open(self, path: str) -> PipeEvents:
        with self._lock:
            self.attempts[path] = self.attempts.get(path, 0) + 1
            fds = self._ready.get(path)
            if not fds:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            return PipeEvents(fds.pop(0))


def now_us() -> int:
    return time.time_ns() // 1000


def records(text: str, layout: str = "us", *, start_us: int | None = None, **kw: str | None):
    start = now_us() if start_us is None else start_us
    return [
        (t // 1_000_000, t % 1_000_000, etype, code, value)
        for t, (etype, code, value) in (
            (start + i * 1000, ev) for i, ev in enumerate(text_to_keys(text, layout, **kw))
        )
    ]


def send(write_fd: int, text: str, layout: str = "us", **kw: str | None) -> None:
    data = pack_events(records(text, layout, **kw))
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view) :]


@contextmanager
def hub_running(
    scanners: list[WedgeScanner],
) -> Iterator[tuple[queue.Queue[ScanRead], queue.Queue[tuple[str, bool]]]]:
    reads: queue.Queue[ScanRead] = queue.Queue()
    states: queue.Queue[tuple[str, bool]] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=WedgeHub(scanners).run,
        args=(reads.put, stop, lambda name, online: states.put((name, online))),
        kwargs={"min_backoff": 0.05, "max_backoff": 0.2},
    )
    thread.start()
    try:
        yield reads, states
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert all(not s.is_open for s in scanners)


def test_scan_read_fields_and_aim_split() -> None:
    bus = PipeBus()
    w = bus.plug(PATH_A)
    label = "]C1" + "0109501101530003" + "10LOT-7" + GS + "21S/1"
    start = now_us()
    send(w, label, "de", start_us=start)
    with WedgeScanner(PATH_A, name="hh-1", layout="de", opener=bus.open) as scanner:
        read = next(scanner.read_scans(threading.Event()))
    os.close(w)
    assert read.device == "hh-1"
    assert (read.symbology, read.text, read.error) == ("]C1", label[3:], None)
    assert read.raw == label.encode("utf-8")
    enter_us = start + (len(text_to_keys(label, "de")) - 4) * 1000  # the Enter press
    assert read.at == datetime.fromtimestamp(enter_us / 1e6, UTC)


def test_read_scans_truncates_then_raises_device_gone() -> None:
    bus = PipeBus()
    w = bus.plug(PATH_A)
    scanner = WedgeScanner(PATH_A, name="hh-1", opener=bus.open, inter_key_timeout=5.0)
    reads = scanner.read_scans(threading.Event())
    send(w, "PART", terminator=None)
    os.close(w)
    read = next(reads)
    assert read.text == "PART" and "truncated: device gone (end of stream)" in (read.error or "")
    with pytest.raises(DeviceGone):
        next(reads)
    assert not scanner.is_open and issubclass(DeviceGone, DeviceError)


def test_two_scanners_at_once_interleaved() -> None:
    bus = PipeBus()
    wa, wb = bus.plug(PATH_A), bus.plug(PATH_B)
    a = WedgeScanner(PATH_A, name="dock-1", layout="us", opener=bus.open)
    b = WedgeScanner(PATH_B, name="dock-2", layout="fr", opener=bus.open)
    codes_a = ["]E04006381333931", "LOC:A-01-02", "]C10109501101530003" + "10A" + GS + "21B"]
    codes_b = ["]C1" + "0095011015300031" + "10L/1" + GS + "3712", "PAL-42", "]Q1hello"]
    recs_a = records("\n".join(codes_a))  # "\n" is typed as Enter
    recs_b = records("\n".join(codes_b), "fr")
    with hub_running([a, b]) as (reads, states):
        online = {states.get(timeout=5), states.get(timeout=5)}
        assert online == {("dock-1", True), ("dock-2", True)}
        for i in range(max(len(recs_a), len(recs_b))):  # one record each, turn about
            if i < len(recs_a):
                os.write(wa, pack_events([recs_a[i]]))
            if i < len(recs_b):
                os.write(wb, pack_events([recs_b[i]]))
            if i % 50 == 0:
                time.sleep(0.001)  # let the hub read mid-code
        got = [reads.get(timeout=5) for _ in range(6)]
    os.close(wa)
    os.close(wb)
    by_device: dict[str, list[str]] = {"dock-1": [], "dock-2": []}
    for read in got:
        assert read.error is None, read
        by_device[read.device].append((read.symbology or "") + (read.text or ""))
    assert by_device == {"dock-1": codes_a, "dock-2": codes_b}


def test_closing_a_pipe_reports_that_device_offline_only() -> None:
    bus = PipeBus()
    wa, wb = bus.plug(PATH_A), bus.plug(PATH_B)
    a = WedgeScanner(PATH_A, name="a", opener=bus.open, inter_key_timeout=5.0)
    b = WedgeScanner(PATH_B, name="b", opener=bus.open)
    with hub_running([a, b]) as (reads, states):
        assert {states.get(timeout=5), states.get(timeout=5)} == {("a", True), ("b", True)}
        send(wa, "HALF", terminator=None)
        time.sleep(0.1)
        os.close(wa)
        assert states.get(timeout=5) == ("a", False)
        cut = reads.get(timeout=5)
        assert (cut.device, cut.text) == ("a", "HALF") and "device gone" in (cut.error or "")
        assert a.last_error == f"{PATH_A}: end of stream"
        send(wb, "STILL-HERE")
        read = reads.get(timeout=5)
        assert (read.device, read.text, read.error) == ("b", "STILL-HERE", None)
        time.sleep(0.5)
        assert bus.attempts[PATH_A] >= 3  # polled while absent
        assert states.empty()  # one report per change, not per retry
    os.close(wb)


def test_device_reappears_and_is_reopened() -> None:
    bus = PipeBus()
    w1 = bus.plug(PATH_A)
    scanner = WedgeScanner(PATH_A, name="hh-1", opener=bus.open)
    reads: queue.Queue[ScanRead] = queue.Queue()
    states: queue.Queue[bool] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=scanner.run_with_reopen,
        args=(reads.put, stop, states.put),
        kwargs={"min_backoff": 0.05, "max_backoff": 0.2},
    )
    thread.start()
    try:
        assert states.get(timeout=5) is True
        send(w1, "FIRST")
        assert reads.get(timeout=5).text == "FIRST"
        os.close(w1)
        assert states.get(timeout=5) is False
        w2 = bus.plug(PATH_A)  # udev recreates the by-id link for the same scanner
        assert states.get(timeout=5) is True
        send(w2, "SECOND")
        assert reads.get(timeout=5).text == "SECOND"
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert states.empty() and reads.empty()
    os.close(w2)


def test_absent_device_is_polled_with_capped_backoff() -> None:
    bus = PipeBus()
    scanner = WedgeScanner(PATH_A, name="hh-1", opener=bus.open)
    with hub_running([scanner]) as (reads, states):
        assert states.get(timeout=5) == ("hh-1", False)
        time.sleep(1.0)
        # 0.05 doubling to 0.2, jittered to half..full: roughly 6-20 tries in a second
        assert 4 <= bus.attempts[PATH_A] <= 30
        assert "No such file" in (scanner.last_error or "")
        w = bus.plug(PATH_A)
        assert states.get(timeout=5) == ("hh-1", True)
        send(w, "LATE")
        assert reads.get(timeout=5).text == "LATE"
    os.close(w)


def test_hub_takes_a_scanner_the_caller_opened() -> None:
    bus = PipeBus()
    w = bus.plug(PATH_A)
    scanner = WedgeScanner(PATH_A, name="hh-1", opener=bus.open)
    scanner.open()
    with hub_running([scanner]) as (reads, states):
        assert states.get(timeout=5) == ("hh-1", True)
        send(w, "OPENED")
        assert reads.get(timeout=5).text == "OPENED"
    assert bus.attempts[PATH_A] == 1
    os.close(w)


def test_silence_ends_a_partial_code() -> None:
    bus = PipeBus()
    wa, wb = bus.plug(PATH_A), bus.plug(PATH_B)
    a = WedgeScanner(PATH_A, name="a", opener=bus.open)
    b = WedgeScanner(PATH_B, name="b", opener=bus.open, terminators=())
    with hub_running([a, b]) as (reads, _):
        send(wa, "NOSUFFIX", terminator=None)
        send(wb, "NOSUFFIX", terminator=None)
        got = {r.device: r for r in (reads.get(timeout=5), reads.get(timeout=5))}
    os.close(wa)
    os.close(wb)
    assert got["a"].text == "NOSUFFIX" and "truncated" in (got["a"].error or "")
    assert (got["b"].text, got["b"].error) == ("NOSUFFIX", None)  # no suffix configured


def test_garbage_and_nonsense_times_become_error_reads() -> None:
    bus = PipeBus()
    w = bus.plug(PATH_A)
    bad = [
        (2**62, 0, 1, 0x2FE, 1), (2**62, 0, 0, 0, 0),  # unknown key, at an impossible time
        (2**62, 1, 1, KEY_A, 9),  # value out of range
        (2**62, 2, 1, KEY_ENTER, 1), (2**62, 3, 1, KEY_ENTER, 0),
    ]  # fmt: skip
    os.write(w, pack_events(bad))
    send(w, "GOOD")
    with WedgeScanner(PATH_A, name="hh-1", opener=bus.open) as scanner:
        reads = scanner.read_scans(threading.Event())
        first, second = next(reads), next(reads)
    os.close(w)
    assert first.text == "\ufffd" and "unknown key" in (first.error or "")
    assert "bad value 9" in (first.error or "")
    assert first.at.tzinfo is not None and abs(time.time() - first.at.timestamp()) < 60
    assert (second.text, second.error) == ("GOOD", None)


def test_partial_records_are_not_events() -> None:
    """evdev reads whole records: a write end closed after half a record reads as end."""
    bus = PipeBus()
    w = bus.plug(PATH_A)
    os.write(w, pack_events(records("X"))[: EVENT_SIZE // 2])
    os.close(w)
    scanner = WedgeScanner(PATH_A, name="hh-1", opener=bus.open)
    with scanner, pytest.raises(DeviceGone):
        next(scanner.read_scans(threading.Event()))


def test_default_opener_refuses_what_is_not_an_event_device(tmp_path: Path) -> None:
    missing = WedgeScanner(str(tmp_path / "nope"), name="x")
    with pytest.raises(DeviceGone, match="No such file"):
        missing.open()
    plain = tmp_path / "plain"
    plain.write_bytes(b"\0" * 48)
    with pytest.raises(DeviceGone, match="ioctl"):
        WedgeScanner(str(plain), name="x").open()


def test_hub_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError):
        WedgeHub([WedgeScanner(PATH_A, name="x"), WedgeScanner(PATH_B, name="x")])


def test_cli_reports_an_absent_device_offline_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "floorsync.devices", "wedge", str(tmp_path / "gone"),
         "--layout", "de"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "gone: offline" in line and "No such file" in line
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out == ""


def test_cli_refuses_unknown_layout() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "floorsync.devices", "wedge", "/dev/null", "--layout", "dvorak"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


@pytest.mark.skipif(
    not os.access("/dev/uinput", os.W_OK), reason="no writable /dev/uinput on this machine"
)
def test_uinput_device_is_grabbed_and_decoded() -> None:  # pragma: no cover - needs uinput
    from evdev import UInput, ecodes

    keys = [KEY_A, KEY_B, KEY_ENTER, ecodes.KEY_LEFTSHIFT]
    with UInput({ecodes.EV_KEY: keys}, name="floorsync-test-wedge") as ui:
        time.sleep(0.2)  # udev creates the node
        with WedgeScanner(ui.device.path, name="ui", layout="us") as scanner:
            for key in (KEY_A, KEY_B, KEY_ENTER):
                ui.write(ecodes.EV_KEY, key, 1)
                ui.syn()
                ui.write(ecodes.EV_KEY, key, 0)
                ui.syn()
            read = next(scanner.read_scans(threading.Event()))
    assert (read.text, read.error) == ("ab", None)
