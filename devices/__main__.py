"""Diagnostics: watch a serial scanner live, or decode a code or an EPC, as JSON lines.

python -m floorsync.devices serial /dev/serial/by-id/... [--suffix cr|lf|crlf|tab|none] [--baud N]
python -m floorsync.devices wedge /dev/input/by-id/...-event-kbd [--layout us|gb|de|fr] [--no-grab]
python -m floorsync.devices decode ']C10109501101530003' [--gs '|']
python -m floorsync.devices decode --epc 3074257BF7194E4000001A85
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict
from typing import Any

from floorsync.devices.base import ScanRead
from floorsync.devices.codes import interpret, interpret_epc
from floorsync.devices.framing import FrameDecoder, split_aim
from floorsync.devices.keymap import LAYOUTS
from floorsync.devices.serial_scanner import SerialScanner

WEDGE_LAYOUTS = sorted(LAYOUTS)
SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "tab": b"\t", "none": b""}


def read_to_json(read: ScanRead) -> dict[str, Any]:
    """A ScanRead with its interpretation, as a JSON-ready dict."""
    identity = None
    if read.text is not None and read.error is None:
        identity = asdict(interpret(read.text, read.symbology))
    return {
        "device": read.device,
        "at": read.at.isoformat(),
        "text": read.text,
        "symbology": read.symbology,
        "raw": read.raw.hex(),
        "error": read.error,
        "identity": identity,
    }


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def _serial(args: argparse.Namespace) -> int:
    scanner = SerialScanner(
        args.port,
        name=args.name,
        baudrate=args.baud,
        decoder=FrameDecoder(suffix=SUFFIXES[args.suffix]),
    )
    stop = threading.Event()

    def on_state(online: bool) -> None:
        print(f"{args.port}: {'online' if online else 'offline'}", file=sys.stderr, flush=True)

    try:
        scanner.run_with_reopen(lambda read: _print(read_to_json(read)), stop, on_state)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _wedge(args: argparse.Namespace) -> int:
    from floorsync.devices.wedge import (
        WedgeScanner,  # evdev is Linux-only: import it only when asked
    )

    scanner = WedgeScanner(
        args.path,
        name=args.name,
        layout=args.layout,
        grab=not args.no_grab,
        inter_key_timeout=args.timeout,
    )
    stop = threading.Event()

    def on_state(online: bool) -> None:
        if online:
            detail = f" ({scanner.device_name})" if scanner.device_name else ""
            print(f"{args.path}: online{detail}", file=sys.stderr, flush=True)
        else:
            detail = f" ({scanner.last_error})" if scanner.last_error else ""
            print(f"{args.path}: offline{detail}", file=sys.stderr, flush=True)

    try:
        scanner.run_with_reopen(lambda read: _print(read_to_json(read)), stop, on_state)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _decode(args: argparse.Namespace) -> int:
    if args.epc is not None:
        _print(asdict(interpret_epc(args.epc)))
        return 0
    if args.text is None:
        print("decode needs TEXT or --epc HEX", file=sys.stderr)
        return 2
    text = args.text.replace(args.gs, "\x1d") if args.gs else args.text
    symbology, rest = split_aim(text)
    _print({"symbology": symbology, "text": rest, "identity": asdict(interpret(rest, symbology))})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m floorsync.devices", description="floorsync device diagnostics"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serial = sub.add_parser("serial", help="print live reads from a serial scanner")
    p_serial.add_argument("port", help="device path (/dev/serial/by-id/...) or pyserial URL")
    p_serial.add_argument("--suffix", choices=sorted(SUFFIXES), default="cr")
    p_serial.add_argument("--baud", type=int, default=9600)
    p_serial.add_argument("--name", default="scanner")
    p_wedge = sub.add_parser("wedge", help="print live reads from a keyboard-wedge scanner")
    p_wedge.add_argument("path", help="event device (/dev/input/by-id/...-event-kbd)")
    p_wedge.add_argument(
        "--layout", choices=WEDGE_LAYOUTS, default="us", help="the scanner's keyboard country"
    )
    p_wedge.add_argument(
        "--no-grab", action="store_true", help="do not grab: keys also reach the console"
    )
    p_wedge.add_argument("--name", default="scanner")
    p_wedge.add_argument("--timeout", type=float, default=0.1, help="inter-key timeout in seconds")
    p_decode = sub.add_parser("decode", help="interpret a barcode text or an EPC")
    p_decode.add_argument("text", nargs="?", help="code as scanned, AIM id included if sent")
    p_decode.add_argument("--epc", help="EPC bank as hex")
    p_decode.add_argument("--gs", help="character to read as the GS1 group separator, e.g. '|'")
    args = parser.parse_args(argv)
    if args.command == "serial":
        return _serial(args)
    if args.command == "wedge":
        return _wedge(args)
    return _decode(args)


if __name__ == "__main__":
    sys.exit(main())
