"""RFID readers on a serial port (USB-COM / RS-232) that print one tag per line.

I/O, framing and reopening are the scanner's: a `devices.serial_scanner.SerialScanner` with a
`devices.framing.FrameDecoder` (CR, LF and CRLF interchangeable) reads the port, and its
`run_with_reopen` reopens the port after an unplug (`DeviceGone`) with capped, jittered backoff,
reporting `on_state` once per change. This module only turns frames into TagReads through a
`LineFormat`. Truncated or overlong frames and lines that do not parse go to `on_error`.
"""

from __future__ import annotations

import threading

from floorsync.devices.base import ScanRead
from floorsync.devices.framing import FrameDecoder
from floorsync.devices.rfid.base import OnError, OnRead, OnState, clip
from floorsync.devices.rfid.lineformat import LineFormat
from floorsync.devices.serial_scanner import SerialScanner


class SerialTagReader:
    """A line-per-tag reader on `port`; address real ports by `/dev/serial/by-id/...`."""

    def __init__(
        self,
        port: str,
        *,
        name: str,
        line_format: LineFormat,
        baudrate: int = 115200,
        on_error: OnError | None = None,
        inter_char_timeout: float = 0.2,
        max_line: int = 1024,
        exclusive: bool = True,
        min_backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        self.name = name
        self.port = port
        self.line_format = line_format
        self.on_error = on_error
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.scanner = SerialScanner(
            port,
            name=name,
            baudrate=baudrate,
            decoder=FrameDecoder(suffix=b"\n", max_length=max_line),
            encoding=line_format.encoding,
            inter_char_timeout=inter_char_timeout,
            exclusive=exclusive,
        )

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        """Read until `stop`, reopening after unplug; see `SerialScanner.run_with_reopen`."""

        def frame(scan: ScanRead) -> None:
            if scan.error:  # truncated, overlong or undecodable frame
                self._error(scan.error, scan.raw)
                return
            try:
                read = self.line_format.parse(scan.raw, self.name, at=scan.at)
            except ValueError as exc:
                self._error(str(exc), scan.raw)
                return
            on_read(read)

        self.scanner.run_with_reopen(
            frame, stop, on_state, min_backoff=self.min_backoff, max_backoff=self.max_backoff
        )

    def _error(self, reason: str, raw: bytes) -> None:
        if self.on_error is not None:
            self.on_error(reason, clip(raw))
