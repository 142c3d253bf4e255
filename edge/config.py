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

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge import wire
from edge.errors import ConfigError
from edge.sync import SyncSettings, hostname_device

SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "tab": b"\t"}
MODES = ("receive", "putaway", "move", "pick", "pack", "ship", "return")


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """A serial (USB-COM) scanner; ``port`` is a path (prefer /dev/serial/by-id/...) or URL."""

    name: str
    port: str
    baudrate: int = 9600
    suffix: str = "cr"
    mode: str = "receive"
    operator: str | None = None
    good_read: str | None = None  # bytes sent after the commit, e.g. "\x1b7" (Honeywell ESC 7)
    bad_read: str | None = None


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """An RFID dock door. ``reader = "sim"`` runs the scripted simulator (demo, tests)."""

    name: str
    location: str
    reader: str = "sim"
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
    command_prefix: str = "CMD:"
    scanners: tuple[ScannerConfig, ...] = ()
    portals: tuple[PortalConfig, ...] = ()

    def validate(self) -> EdgeConfig:
        try:
            wire.check_name(self.site, "site")
            wire.check_name(self.device, "device")
        except wire.WireError as exc:
            raise ConfigError(str(exc)) from None
        for s in self.scanners:
            if s.suffix not in SUFFIXES:
                raise ConfigError(f"scanner {s.name}: suffix must be one of {sorted(SUFFIXES)}")
            if s.mode not in MODES:
                raise ConfigError(f"scanner {s.name}: mode must be one of {MODES}")
        for p in self.portals:
            if p.direction not in ("in", "out"):
                raise ConfigError(f"portal {p.name}: direction must be 'in' or 'out'")
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
        data.pop("workflow", {}), "[workflow]", {"location_prefixes", "command_prefix"}
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
