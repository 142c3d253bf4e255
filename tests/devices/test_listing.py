"""Device listing: by-id links resolved, scanners in keyboard mode found, nothing ever raises."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from floorsync.devices import listing
from floorsync.devices.sim import open_pty

# As the kernel writes capabilities/key on a 64-bit host: a keyboard, a power button.
KEYBOARD_BITMAP = "120013 0 0 0 1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe"
POWER_BUTTON_BITMAP = "10000000000000 0"  # KEY_POWER only
LONG_BITS = struct.calcsize("l") * 8
on_64_bit = pytest.mark.skipif(LONG_BITS != 64, reason="bitmaps above are 64-bit words")


def bitmap(keys: set[int]) -> str:
    """A capabilities/key bitmap in this host's word size, most significant word first."""
    value = sum(1 << k for k in keys)
    words = []
    while value:
        words.append(f"{value & ((1 << LONG_BITS) - 1):x}")
        value >>= LONG_BITS
    return " ".join(reversed(words)) or "0"


@pytest.fixture
def ptys() -> Any:
    opened = [open_pty() for _ in range(3)]
    yield [path for _, path in opened]
    for fd, _ in opened:
        os.close(fd)


def _no_ports(monkeypatch: pytest.MonkeyPatch, ports: list[Any] | None = None) -> None:
    import serial.tools.list_ports

    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: list(ports or []))


def test_serial_by_id_links_resolve_to_their_ports(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    honeywell = by_id / "usb-Honeywell_Imaging___Mobility_1900_21123B4567-if00"
    honeywell.symlink_to(ptys[0])
    zebra = by_id / "usb-Zebra_Technologies_Symbol_Bar_Code_Scanner_S-N_1234-if00"
    zebra.symlink_to(ptys[1])
    (by_id / "usb-gone-if00").symlink_to(tmp_path / "nothing-here")
    port = SimpleNamespace(
        device=ptys[1],
        description="Symbol Bar Code Scanner",
        manufacturer="Zebra Technologies",
        vid=0x05E0,
        pid=0x1900,
    )
    _no_ports(monkeypatch, [port])
    entries = {e["by_id"]: e for e in listing.list_serial(str(by_id))}
    assert entries[str(honeywell)] == {
        "kind": "serial",
        "path": os.path.realpath(ptys[0]),
        "by_id": str(honeywell),
        "description": honeywell.name,
        "vendor": None,
        "product": None,
    }
    listed = entries[str(zebra)]
    assert listed["path"] == ptys[1]
    assert (listed["vendor"], listed["product"]) == ("05e0", "1900")
    assert listed["description"] == "Symbol Bar Code Scanner (Zebra Technologies)"
    assert "error" not in listed
    gone = entries[str(by_id / "usb-gone-if00")]
    assert gone["error"] == "link target missing"
    assert len(entries) == 3  # the port pyserial lists and its link are one entry


def test_missing_directories_list_nothing_and_never_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ports(monkeypatch)
    missing = str(tmp_path / "missing")
    assert listing.list_devices(missing, missing, input_dir=missing, sysfs_input=missing) == []
    assert listing.by_id_links(missing) == {}


def test_real_host_listing_is_json_ready() -> None:
    json.dumps(listing.list_devices())


def test_comports_failure_is_an_error_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    import serial.tools.list_ports

    def broken() -> list[Any]:
        raise OSError("sysfs went away")

    monkeypatch.setattr(serial.tools.list_ports, "comports", broken)
    entries = listing.list_serial("/nonexistent")
    assert len(entries) == 1 and "sysfs went away" in entries[0]["error"]


def test_serial_permission_problem_is_reported(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "usb-scanner-if00").symlink_to(ptys[0])
    _no_ports(monkeypatch)
    monkeypatch.setattr(listing, "_access", lambda path, mode: False)
    (entry,) = listing.list_serial(str(tmp_path))
    assert "dialout" in entry["error"] and entry["by_id"].endswith("usb-scanner-if00")


def _fake_input_tree(tmp_path: Path, ptys: list[str]) -> tuple[Path, Path, Path]:
    """event0 (a scanner), event1 (a power button), event2 (no sysfs) as char devices (ptys)."""
    input_dir, by_id, sysfs = tmp_path / "input", tmp_path / "input-by-id", tmp_path / "sys"
    input_dir.mkdir()
    by_id.mkdir()
    for i, pty in enumerate(ptys):
        (input_dir / f"event{i}").symlink_to(pty)
    (input_dir / "mouse0").write_text("")  # not event*, not a char device
    (by_id / "usb-Honeywell_Imaging___Mobility_1900-event-kbd").symlink_to(input_dir / "event0")
    for i, (name, keys) in enumerate(
        [("Honeywell Imaging & Mobility 1900", {*range(1, 60), 96}), ("Power Button", {116})]
    ):
        device = sysfs / f"event{i}" / "device"
        (device / "id").mkdir(parents=True)
        (device / "capabilities").mkdir()
        (device / "name").write_text(name + "\n")
        (device / "id" / "vendor").write_text("0c2e\n")
        (device / "id" / "product").write_text("0b61\n")
        (device / "capabilities" / "key").write_text(bitmap(keys) + "\n")
    return input_dir, by_id, sysfs


def test_unreadable_input_devices_are_classified_from_sysfs(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, by_id, sysfs = _fake_input_tree(tmp_path, ptys)

    def denied(path: str) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(listing, "_open_input", denied)
    entries = listing.list_input(str(by_id), str(input_dir), str(sysfs))
    assert [os.path.basename(e["path"]) for e in entries] == ["event0", "event2"]
    scanner, unknown = entries
    assert scanner["by_id"] == str(by_id / "usb-Honeywell_Imaging___Mobility_1900-event-kbd")
    assert (scanner["description"], scanner["vendor"], scanner["product"]) == (
        "Honeywell Imaging & Mobility 1900",
        "0c2e",
        "0b61",
    )
    assert scanner["looks_like"] == "keyboard-wedge" and "group input" in scanner["error"]
    assert unknown["looks_like"] is None and "group input" in unknown["error"]


def test_input_devices_that_are_not_evdev_devices_do_not_raise(
    tmp_path: Path, ptys: list[str]
) -> None:
    input_dir, by_id, sysfs = _fake_input_tree(tmp_path, ptys)
    entries = listing.list_input(str(by_id), str(input_dir), str(sysfs))  # real evdev, on ptys
    assert [os.path.basename(e["path"]) for e in entries] == ["event0", "event2"]
    assert all(e["error"].startswith("cannot open") for e in entries)


def test_readable_input_devices_through_evdev(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, by_id, sysfs = _fake_input_tree(tmp_path, ptys)
    closed: list[str] = []

    class FakeDevice:
        def __init__(self, path: str) -> None:
            self.path = path
            self.name = {"event0": "Datalogic Gryphon", "event1": "Mouse"}.get(
                os.path.basename(path), "Keypad"
            )
            self.info = SimpleNamespace(vendor=0x05F9, product=0x2206)

        def capabilities(self) -> dict[int, list[int]]:
            name = os.path.basename(self.path)
            if name == "event0":
                return {0: [0, 1], 1: [*range(1, 60), 96]}
            if name == "event1":
                return {1: [272, 273], 2: [0, 1]}  # buttons and relative axes
            return {1: [71, 72, 73, 75, 76, 77, 79, 80, 81, 82, 96]}  # keypad digits, KP Enter

        def close(self) -> None:
            closed.append(self.path)

    monkeypatch.setattr(listing, "_open_input", FakeDevice)
    entries = listing.list_input(str(by_id), str(input_dir), str(sysfs))
    assert [(os.path.basename(e["path"]), e["description"]) for e in entries] == [
        ("event0", "Datalogic Gryphon"),
        ("event2", "Keypad"),
    ]
    assert entries[0]["vendor"] == "05f9" and "error" not in entries[0]
    assert entries[0]["by_id"] is not None and entries[1]["by_id"] is None
    assert len(closed) == 3


def test_evdev_missing_is_one_error_entry(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, by_id, sysfs = _fake_input_tree(tmp_path, ptys)

    def no_evdev(path: str) -> Any:
        raise ImportError("No module named 'evdev'")

    monkeypatch.setattr(listing, "_open_input", no_evdev)
    (entry,) = listing.list_input(str(by_id), str(input_dir), str(sysfs))
    assert "evdev" in entry["error"]


@on_64_bit
def test_sysfs_key_bitmap() -> None:
    keys = listing.sysfs_keys(KEYBOARD_BITMAP)
    assert listing.looks_like_wedge(keys)
    assert listing.sysfs_keys(POWER_BUTTON_BITMAP) == {116}
    assert not listing.looks_like_wedge(listing.sysfs_keys(POWER_BUTTON_BITMAP))
    assert not listing.looks_like_wedge(frozenset(range(2, 12)))  # digits without Enter


def test_sysfs_bitmap_round_trip() -> None:
    keys = {1, 2, 28, 63, 64, 96, 116, 240, 0x2FF}
    assert listing.sysfs_keys(bitmap(keys)) == keys
