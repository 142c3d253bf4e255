"""SerialTagReader through real pyserial on pseudo-terminals: lines, garbage, unplug, replug."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.devices.rfid.base import TagReader
from floorsync.devices.rfid.lineformat import LineFormat
from floorsync.devices.rfid.serial_reader import SerialTagReader
from floorsync.devices.sim import ScriptedScanner, open_pty, sgtin96_hex
from tests.devices.rfid import running

EPC = sgtin96_hex("0614141", "812345", 6789)
FORMAT = LineFormat.template("{epc},{antenna},{rssi},{count}")


class Running(running.Running[SerialTagReader]):
    join_s = 5.0


@pytest.fixture
def pty() -> Iterator[tuple[ScriptedScanner, str]]:
    master, path = open_pty()
    device = ScriptedScanner(master, suffix=b"\r\n")
    yield device, path
    device.unplug()


def test_lines_become_tag_reads_duplicates_kept(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    reader = SerialTagReader(path, name="desk-1", line_format=FORMAT)
    assert isinstance(reader, TagReader)
    running = Running(reader)
    try:
        assert running.states.get(timeout=5) is True
        device.type(f"{EPC.lower()},1,-52.5,3")
        device.type(f"{EPC},1,-52.5,3")  # the same tag again: delivered again
        device.send(b"E28011606000,2,")  # a line split across writes
        device.send(b"-61,1\n")
        reads = [running.reads.get(timeout=5) for _ in range(3)]
    finally:
        running.close()
    assert [r.epc for r in reads] == [EPC, EPC, "E28011606000"]
    assert (reads[0].reader, reads[0].antenna, reads[0].rssi, reads[0].seen) == (
        "desk-1", 1, -52.5, 3
    )
    assert reads[0].at.tzinfo is not None
    assert reads[2].antenna == 2 and reads[2].rssi == -61.0
    assert running.errors.empty()


def test_garbage_is_reported_and_reading_goes_on(pty: tuple[ScriptedScanner, str]) -> None:
    device, path = pty
    running = Running(
        SerialTagReader(path, name="desk-1", line_format=FORMAT, inter_char_timeout=0.1)
    )
    try:
        assert running.states.get(timeout=5) is True
        device.send(b"\xff\xfe\x00garbage\r\n")
        device.type("NOTHEX,1,-50,1")
        device.type(f"{EPC},x,-50,1")
        device.type("complete nonsense")
        device.type(f"{EPC},4,-40,1")
        good = running.reads.get(timeout=5)
        device.send(f"{EPC},1,-4".encode())  # cut short: silence ends it as truncated
        errors = [running.errors.get(timeout=5) for _ in range(5)]
    finally:
        running.close()
    assert good.epc == EPC and good.antenna == 4
    reasons = [reason for reason, _ in errors]
    assert "undecodable" in reasons[0]
    assert "not hex" in reasons[1]
    assert "antenna" in reasons[2]
    assert "does not match" in reasons[3]
    assert "truncated" in reasons[4] and errors[4][1] == f"{EPC},1,-4".encode()
    assert running.reads.empty()


def test_unplug_goes_offline_and_a_new_pty_at_the_link_comes_online(tmp_path: Path) -> None:
    """The by-id symlink is repointed at a new pty, as udev does when the reader comes back."""
    link = tmp_path / "usb-ThingMagic-if00"
    master1, path1 = open_pty()
    link.symlink_to(path1)
    reader = SerialTagReader(
        str(link), name="desk-1", line_format=FORMAT, min_backoff=0.05, max_backoff=0.2
    )
    running = Running(reader)
    master2 = -1
    try:
        assert running.states.get(timeout=5) is True
        ScriptedScanner(master1, suffix=b"\n").type(f"{EPC},1,-50,1")
        assert running.reads.get(timeout=5).epc == EPC
        os.close(master1)  # unplug
        assert running.states.get(timeout=5) is False
        master2, path2 = open_pty()
        new = tmp_path / "new-link"
        new.symlink_to(path2)
        os.replace(new, link)
        assert running.states.get(timeout=5) is True
        ScriptedScanner(master2, suffix=b"\n").type(f"{EPC},2,-51,1")
        read = running.reads.get(timeout=5)
    finally:
        running.close()
        if master2 >= 0:
            os.close(master2)
    assert read.antenna == 2
    assert running.states.empty()  # one report per change, not per retry
