"""Edge agent configuration: one TOML file per host, command-line options on top.

Example (``deploy/examples/handheld.toml``)::

    site = "wh1"
    device = "hh-07"

    [outbox]
    path = "/var/lib/floorsync/outbox.db"
    cap_mb = 256
    retention_h = 24

    [sync]
    broker = "mqtt://central.example:1883"

    [[scanners]]
    name = "hh-07"
    port = "/dev/serial/by-id/usb-Honeywell_1900-if00"
    mode = "receive"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge import wire
from edge.errors import ConfigError
from edge.sync import SyncSettings, hostname_device

SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "tab": b"\t"}
READERS = ("sim", "serial", "impinj-mqtt", "zebra-mqtt", "impinj-http", "zebra-http", "llrp",
           "replay")
MODES = ("receive", "putaway", "move", "pick", "pack", "ship", "return")


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """A scanner. ``kind = "serial"`` (USB-COM): ``port`` is a path (prefer
    /dev/serial/by-id/...) or pyserial URL. ``kind = "wedge"`` (keyboard mode): ``port`` is an
    input device (prefer /dev/input/by-id/...), decoded with the scanner's ``layout``."""

    name: str
    port: str
    kind: str = "serial"
    layout: str = "us"  # wedge: the keyboard layout the scanner is set to, never the host's
    grab: bool = True  # wedge: exclusive, so scans do not also type into the console
    baudrate: int = 9600
    suffix: str = "cr"
    mode: str = "receive"
    operator: str | None = None
    good_read: str | None = None  # bytes sent after the commit, e.g. "\x1b7" (Honeywell ESC 7)
    bad_read: str | None = None


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """An RFID dock door and its reader.

    ``reader``: ``sim`` (scripted simulator), ``serial`` (``port``, ``line_format``,
    ``baudrate``), ``impinj-mqtt`` / ``zebra-mqtt`` (``broker``, ``topic``), ``impinj-http`` /
    ``zebra-http`` (listens on ``host``:``http_port``), ``llrp`` (``host``; needs the llrp
    extra), ``replay`` (``path`` of JSON lines, ``realtime``).
    """

    name: str
    location: str
    reader: str = "sim"
    port: str | None = None
    baudrate: int = 115200
    line_format: str = "{epc},{antenna},{rssi}"
    broker: str | None = None
    topic: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8080
    path: str | None = None
    realtime: bool = True
    direction: str = "in"  # in: tags passing are received here; out: shipped from here
    quiet_s: float = 1.0  # a pass ends after this long without reads of the tag
    min_reads: int = 2  # reads before a tag counts (fewer are glimpses and stray reads)
    company_prefixes: tuple[str, ...] = ()
    sim_pallets: int = 0  # with reader "sim": pallets to run through (0: forever)
    sim_interval_s: float = 4.0


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    site: str = "site"
    device: str = field(default_factory=hostname_device)
    outbox_path: Path = Path("floorsync-outbox.db")
    outbox_cap_mb: float = 256
    outbox_retention_h: float = 24
    sync: SyncSettings = field(default_factory=SyncSettings)
    location_prefixes: tuple[str, ...] = ("LOC:",)
    location_patterns: tuple[str, ...] = ()  # regexes for bin labels, e.g. "[A-Z]-\\d{2}-\\d{2}"
    command_prefix: str = "CMD:"
    scanners: tuple[ScannerConfig, ...] = ()
    portals: tuple[PortalConfig, ...] = ()

    def validate(self) -> EdgeConfig:
        try:
            wire.check_name(self.site, "site")
            wire.check_name(self.device, "device")
        except wire.WireError as exc:
            raise ConfigError(str(exc)) from None
        for pattern in self.location_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"[workflow] location pattern {pattern!r}: {exc}") from None
        for s in self.scanners:
            if s.kind not in ("serial", "wedge"):
                raise ConfigError(f"scanner {s.name}: kind must be 'serial' or 'wedge'")
            if s.kind == "wedge" and s.layout not in ("us", "gb", "de", "fr"):
                raise ConfigError(f"scanner {s.name}: layout must be one of us, gb, de, fr")
            if s.suffix not in SUFFIXES:
                raise ConfigError(f"scanner {s.name}: suffix must be one of {sorted(SUFFIXES)}")
            if s.mode not in MODES:
                raise ConfigError(f"scanner {s.name}: mode must be one of {MODES}")
        for p in self.portals:
            if p.direction not in ("in", "out"):
                raise ConfigError(f"portal {p.name}: direction must be 'in' or 'out'")
            if p.reader not in READERS:
                raise ConfigError(f"portal {p.name}: reader must be one of {READERS}")
        return self


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _section(data: Any, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return data


def load(path: Path | None, **overrides: Any) -> EdgeConfig:
    """Read a TOML file (optional), then apply non-None overrides (command-line options)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    outbox = _section(data.pop("outbox", {}), "[outbox]", {"path", "cap_mb", "retention_h"})
    sync = _build(SyncSettings, data.pop("sync", {}), "[sync]")
    scanners = tuple(
        _build(ScannerConfig, s, f"[[scanners]] #{i + 1}")
        for i, s in enumerate(data.pop("scanners", []))
    )
    portals = tuple(
        _build(PortalConfig, p, f"[[portals]] #{i + 1}")
        for i, p in enumerate(data.pop("portals", []))
    )
    workflow = _section(
        data.pop("workflow", {}), "[workflow]",
        {"location_prefixes", "location_patterns", "command_prefix"},
    )
    config = _build(EdgeConfig, data, "top level")
    config = replace(
        config,
        sync=sync,
        scanners=scanners,
        portals=portals,
        outbox_path=Path(outbox.get("path", config.outbox_path)),
        outbox_cap_mb=outbox.get("cap_mb", config.outbox_cap_mb),
        outbox_retention_h=outbox.get("retention_h", config.outbox_retention_h),
        location_prefixes=tuple(workflow.get("location_prefixes", config.location_prefixes)),
        location_patterns=tuple(workflow.get("location_patterns", config.location_patterns)),
        command_prefix=workflow.get("command_prefix", config.command_prefix),
    )
    sync_overrides = {k: overrides.pop(k) for k in ("broker", "protocol") if k in overrides}
    sync_overrides = {k: v for k, v in sync_overrides.items() if v is not None}
    if sync_overrides:
        config = replace(config, sync=replace(config.sync, **sync_overrides))
    top = {k: v for k, v in overrides.items() if v is not None}
    if "outbox_path" in top:
        top["outbox_path"] = Path(top["outbox_path"])
    return replace(config, **top).validate()
