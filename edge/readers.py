"""Device drivers from configuration: which scanner or RFID reader a config entry names.

The agent asks this module for a scanner or a tag reader and gets an object of ``devices``
with ``run_with_reopen(on_read, stop, on_state)`` or ``run(on_read, stop, on_state)``; the
drivers themselves (framing, reconnects, vendor formats) stay in ``devices``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol

from floorsync.devices.base import DeviceError, ScanRead, TagRead, now
from floorsync.devices.framing import FrameDecoder
from floorsync.edge.config import READERS, SUFFIXES, PortalConfig, ScannerConfig
from floorsync.edge.errors import ConfigError


class Scanner(Protocol):
    def run_with_reopen(self, on_read: Callable[[ScanRead], None], stop: Any,
                        on_state: Callable[[bool], None] | None = None) -> None: ...

    def good_read(self) -> None: ...

    def bad_read(self) -> None: ...


def _feedback(text: str | None) -> bytes | None:
    return text.encode("latin-1") if text else None


class _Quiet:
    """Keyboard-wedge scanners take no host feedback (their beep is their own)."""

    def __init__(self, scanner: Any) -> None:
        self._scanner = scanner

    def run_with_reopen(self, on_read: Callable[[ScanRead], None], stop: Any,
                        on_state: Callable[[bool], None] | None = None) -> None:
        self._scanner.run_with_reopen(on_read, stop, on_state)

    def good_read(self) -> None:
        pass

    def bad_read(self) -> None:
        pass


def make_scanner(config: ScannerConfig) -> Scanner:
    if config.kind == "wedge":
        from floorsync.devices.wedge import WedgeScanner

        return _Quiet(WedgeScanner(config.port, name=config.name, layout=config.layout,
                                   grab=config.grab))
    from floorsync.devices.serial_scanner import SerialScanner

    return SerialScanner(
        config.port,
        name=config.name,
        baudrate=config.baudrate,
        decoder=FrameDecoder(suffix=SUFFIXES[config.suffix]),
        exclusive="://" not in config.port,
        good_read_feedback=_feedback(config.good_read),
        bad_read_feedback=_feedback(config.bad_read),
    )


def make_tag_reader(config: PortalConfig, on_error: Callable[[str, bytes], None],
                    client_id: str | None = None) -> Any:
    """A ``devices.rfid`` TagReader for a door (``reader = "sim"`` is handled by the agent).

    ``client_id``: an MQTT reader's stable client id (``EdgeConfig.reader_client_id``)."""
    kind = config.reader
    if kind == "serial":
        from floorsync.devices.rfid.lineformat import LineFormat
        from floorsync.devices.rfid.serial_reader import SerialTagReader

        if not config.port:
            raise ConfigError(f"portal {config.name}: a serial reader needs 'port'")
        return SerialTagReader(config.port, name=config.name, baudrate=config.baudrate,
                               line_format=LineFormat.template(config.line_format),
                               on_error=on_error)
    if kind in ("impinj-mqtt", "zebra-mqtt", "impinj-http", "zebra-http"):
        if kind.startswith("impinj"):
            from floorsync.devices.rfid.impinj import parse_impinj as parser
        else:
            from floorsync.devices.rfid.zebra import parse_zebra as parser
        if kind.endswith("mqtt"):
            from floorsync.devices.rfid.mqtt_reader import MqttTagReader

            if not (config.broker and config.topic):
                raise ConfigError(f"portal {config.name}: {kind} needs 'broker' and 'topic'")
            return _built(config, lambda: MqttTagReader(
                config.broker or "", config.topic or "", parser, name=config.name,
                client_id=client_id or config.client_id, on_error=on_error,
                protocol=5 if config.protocol == "5" else 4,
                username=config.username, password=config.password, ca_file=config.ca_file,
                cert_file=config.cert_file, key_file=config.key_file))
        from floorsync.devices.rfid.http_receiver import HttpTagReceiver

        return _built(config, lambda: HttpTagReceiver(
            config.host, config.http_port, parser, name=config.name, on_error=on_error,
            username=config.username, password=config.password, token=config.token,
            cert_file=config.cert_file, key_file=config.key_file,
            max_body=int(config.max_body_mb * 1024 * 1024)))
    if kind == "llrp":
        from floorsync.devices.rfid.llrp import LlrpTagReader

        return LlrpTagReader(config.host, name=config.name, on_error=on_error)
    if kind == "replay":
        from floorsync.devices.rfid.replay import ReplayReader

        if not config.path:
            raise ConfigError(f"portal {config.name}: a replay reader needs 'path'")
        return ReplayReader(config.path, name=config.name, realtime=config.realtime,
                            on_error=on_error)
    raise ConfigError(f"portal {config.name}: reader must be one of {READERS} (got {kind!r})")


def _built(config: PortalConfig, build: Callable[[], Any]) -> Any:
    """A network reader, its TLS files loaded now: a bad file is a ConfigError at start."""
    try:
        return build()
    except DeviceError as exc:
        raise ConfigError(f"portal {config.name}: {exc}") from None


def simulated_pallets(config: PortalConfig) -> Iterator[list[TagRead]]:
    """Pallets of 6-12 tagged cases passing a simulated door, each starting when asked for."""
    from floorsync.devices.sim import ScriptedPortal, sgtin96_hex

    rng = random.Random()
    portal = ScriptedPortal(config.name, rng_seed=rng.randrange(2**31))
    while True:
        base = rng.randrange(1, 10**9)
        tags = [sgtin96_hex("0614141", "812345", base + i) for i in range(rng.randint(6, 12))]
        yield portal.pallet_pass(tags, now() + timedelta(milliseconds=200))
