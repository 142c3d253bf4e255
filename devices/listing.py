"""Which scanners could this host read? Serial ports and keyboard-like input devices.

`list_devices()` returns one dict per candidate, JSON-ready:

    {"kind": "serial" | "input", "path": "/dev/ttyACM0", "by_id": "/dev/serial/by-id/usb-...",
     "description": "...", "vendor": "0c2e", "product": "0b61"}

plus `"looks_like": "keyboard-wedge"` on input devices and `"error"` when the device cannot be
used as it is (permission denied, dangling link). Vendor and product are the USB ids as udev
writes them (ID_VENDOR_ID, ID_MODEL_ID), for deploy/udev/99-floorsync.rules.

Choices:
- Serial ports come from pyserial's `comports()`, plus every /dev/serial/by-id link whose target
  it does not list (a by-id link means a device is there). The by-id path is what configuration
  should use: ttyACM numbers change with plugging order.
- A scanner in keyboard mode is a keyboard to the kernel: any input device whose keys include
  the ten digits (top row or keypad) and Enter is listed as "keyboard-wedge", real keyboards
  too; the name and by-id link tell them apart.
- Input devices are found like evdev.list_devices() does (event* character devices) but without
  its readability filter, so a device the user may not open is reported with an error instead of
  silently missing. Its name and keys then come from sysfs (/sys/class/input), readable by all.
- Nothing here raises: a missing directory lists nothing, an unreadable device becomes an entry
  with "error".
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import struct
from typing import Any

SERIAL_BY_ID = "/dev/serial/by-id"
INPUT_BY_ID = "/dev/input/by-id"
INPUT_DIR = "/dev/input"
SYSFS_INPUT = "/sys/class/input"

EV_KEY = 0x01
KEY_ENTER = 28
KEY_KPENTER = 96
TOP_ROW_DIGITS = frozenset(range(2, 12))  # KEY_1 .. KEY_0
KEYPAD_DIGITS = frozenset({71, 72, 73, 75, 76, 77, 79, 80, 81, 82})  # KEY_KP7 .. KEY_KP0
_LONG_BITS = struct.calcsize("l") * 8

_access = os.access  # indirections for tests (running as root, every device is accessible)


def _open_input(path: str) -> Any:
    import evdev

    return evdev.InputDevice(path)


def looks_like_wedge(keys: set[int] | frozenset[int]) -> bool:
    """True for key sets a scanner in keyboard mode has: ten digits and Enter."""
    digits = keys >= TOP_ROW_DIGITS or keys >= KEYPAD_DIGITS
    return digits and (KEY_ENTER in keys or KEY_KPENTER in keys)


def by_id_links(directory: str) -> dict[str, str]:
    """{resolved device path: link} for the symlinks in a by-id directory; {} when it is missing."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        link = os.path.join(directory, name)
        if os.path.islink(link):
            out.setdefault(os.path.realpath(link), link)
    return out


def _hex_id(value: Any) -> str | None:
    if isinstance(value, int):
        return f"{value:04x}"
    if isinstance(value, str) and value.strip():
        return value.strip().lower().zfill(4)
    return None


def _permission_error(path: str, group: str) -> str | None:
    if _access(path, os.R_OK | os.W_OK):
        return None
    return f"permission denied: {path} is not readable and writable; add the user to group {group}"


def list_serial(serial_by_id: str = SERIAL_BY_ID) -> list[dict[str, Any]]:
    """Serial ports (pyserial) and /dev/serial/by-id links, with their by-id paths."""
    links = by_id_links(serial_by_id)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        from serial.tools.list_ports import comports

        ports = list(comports())
    except Exception as exc:  # pyserial missing or sysfs oddities: report, go on
        ports = []
        out.append(_serial_entry(None, None, None, None, None, f"cannot list ports: {exc}"))
    for port in ports:
        try:
            path = str(port.device)
            real = os.path.realpath(path)
            seen.add(real)
            description = port.description if port.description not in (None, "n/a") else None
            if port.manufacturer and description and port.manufacturer not in description:
                description = f"{description} ({port.manufacturer})"
            out.append(
                _serial_entry(
                    path,
                    links.get(real),
                    description,
                    _hex_id(port.vid),
                    _hex_id(port.pid),
                    _permission_error(path, "dialout"),
                )
            )
        except Exception as exc:
            out.append(_serial_entry(None, None, None, None, None, f"unreadable port: {exc}"))
    for real, link in sorted(links.items(), key=lambda item: item[1]):
        if real in seen:
            continue
        name = os.path.basename(link)
        if not os.path.exists(real):
            out.append(_serial_entry(real, link, name, None, None, "link target missing"))
            continue
        out.append(_serial_entry(real, link, name, None, None, _permission_error(real, "dialout")))
    return out


def _serial_entry(
    path: str | None,
    by_id: str | None,
    description: str | None,
    vendor: str | None,
    product: str | None,
    error: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": "serial",
        "path": path,
        "by_id": by_id,
        "description": description,
        "vendor": vendor,
        "product": product,
    }
    if error:
        entry["error"] = error
    return entry


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def sysfs_keys(bitmap: str) -> frozenset[int]:
    """Key codes from a sysfs capabilities/key bitmap (hex words, most significant first)."""
    keys: set[int] = set()
    for index, word in enumerate(reversed(bitmap.split())):
        bits = int(word, 16)
        base = index * _LONG_BITS
        while bits:
            low = bits & -bits
            keys.add(base + low.bit_length() - 1)
            bits ^= low
    return frozenset(keys)


def _from_sysfs(sysfs_input: str, path: str) -> dict[str, Any] | None:
    device = os.path.join(sysfs_input, os.path.basename(path), "device")
    bitmap = _read(os.path.join(device, "capabilities", "key"))
    if bitmap is None:
        return None
    try:
        keys = sysfs_keys(bitmap)
    except ValueError:
        return None
    return {
        "name": _read(os.path.join(device, "name")),
        "vendor": _hex_id(_read(os.path.join(device, "id", "vendor"))),
        "product": _hex_id(_read(os.path.join(device, "id", "product"))),
        "keys": keys,
    }


def _input_entry(
    path: str, by_id: str | None, name: str | None, vendor: str | None, product: str | None
) -> dict[str, Any]:
    return {
        "kind": "input",
        "path": path,
        "by_id": by_id,
        "description": name,
        "vendor": vendor,
        "product": product,
        "looks_like": "keyboard-wedge",
    }


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def list_input(
    input_by_id: str = INPUT_BY_ID, input_dir: str = INPUT_DIR, sysfs_input: str = SYSFS_INPUT
) -> list[dict[str, Any]]:
    """Input devices that could be scanners in keyboard mode, with their by-id paths."""
    found = glob.glob(os.path.join(glob.escape(input_dir), "event*"))
    paths = sorted((p for p in found if _is_char_device(p)), key=lambda p: (len(p), p))
    if not paths:
        return []
    links = by_id_links(input_by_id)
    out: list[dict[str, Any]] = []
    for path in paths:
        by_id = links.get(os.path.realpath(path))
        try:
            device = _open_input(path)
        except ImportError:
            return [_evdev_missing(input_dir)]
        except Exception as exc:  # PermissionError above all; evdev raises OSError subclasses
            info = _from_sysfs(sysfs_input, path)
            reason = (
                f"permission denied: add the user to group input ({exc})"
                if isinstance(exc, PermissionError)
                else f"cannot open: {type(exc).__name__}: {exc}"
            )
            if info is None:
                entry = _input_entry(path, by_id, None, None, None)
                entry["looks_like"] = None  # cannot tell without its keys
            elif looks_like_wedge(info["keys"]):
                entry = _input_entry(path, by_id, info["name"], info["vendor"], info["product"])
            else:
                continue
            entry["error"] = reason
            out.append(entry)
            continue
        try:
            keys = frozenset(device.capabilities().get(EV_KEY, []))
            if looks_like_wedge(keys):
                out.append(
                    _input_entry(
                        path,
                        by_id,
                        device.name,
                        _hex_id(device.info.vendor),
                        _hex_id(device.info.product),
                    )
                )
        except Exception as exc:
            entry = _input_entry(path, by_id, None, None, None)
            entry.update(looks_like=None, error=f"cannot read: {type(exc).__name__}: {exc}")
            out.append(entry)
        finally:
            with contextlib.suppress(Exception):
                device.close()
    return out


def _evdev_missing(input_dir: str) -> dict[str, Any]:
    entry = _input_entry(input_dir, None, None, None, None)
    error = "python-evdev is not installed (pip install floorsync[edge])"
    entry.update(looks_like=None, error=error)
    return entry


def list_devices(
    serial_by_id: str = SERIAL_BY_ID,
    input_by_id: str = INPUT_BY_ID,
    *,
    input_dir: str = INPUT_DIR,
    sysfs_input: str = SYSFS_INPUT,
) -> list[dict[str, Any]]:
    """Serial ports, then scanner-like input devices; never raises."""
    out: list[dict[str, Any]] = []
    try:
        out.extend(list_serial(serial_by_id))
    except Exception as exc:  # a last resort: listing is diagnostics, never a crash
        out.append(_serial_entry(None, None, None, None, None, f"{type(exc).__name__}: {exc}"))
    try:
        out.extend(list_input(input_by_id, input_dir, sysfs_input))
    except Exception as exc:
        entry = _input_entry(input_dir, None, None, None, None)
        entry.update(looks_like=None, error=f"{type(exc).__name__}: {exc}")
        out.append(entry)
    return out
