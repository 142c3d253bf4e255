"""Scanners in serial (USB-COM / RS-232) mode, through pyserial.

Serial mode is preferred over keyboard wedge for GS1 labels: the group separator survives and
there is no keyboard layout. The scanner reads with a short timeout so a stop request and the
inter-character silence (which ends a partial frame) are noticed; pyserial errors, such as the
"readiness to read but returned no data" an unplugged device causes, become `DeviceGone`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import serial

from floorsync.devices.base import DeviceError, DeviceGone, ScanRead
from floorsync.devices.framing import FrameDecoder, to_scan_read

HONEYWELL_GOOD_READ = b"\x1b7"
HONEYWELL_BAD_READ = b"\x1b8"


class SerialScanner:
    """One serial scanner. Address real ports by `/dev/serial/by-id/...` so reopen finds them."""

    def __init__(
        self,
        port: str,
        *,
        name: str,
        baudrate: int = 9600,
        decoder: FrameDecoder | None = None,
        encoding: str = "utf-8",
        inter_char_timeout: float = 0.05,
        exclusive: bool = True,
        good_read_feedback: bytes | None = None,
        bad_read_feedback: bytes | None = None,
    ) -> None:
        self.port = port
        self.name = name
        self.baudrate = baudrate
        self.decoder = decoder if decoder is not None else FrameDecoder()
        self.encoding = encoding
        self.inter_char_timeout = inter_char_timeout
        self.exclusive = exclusive
        self.good_read_feedback = good_read_feedback
        self.bad_read_feedback = bad_read_feedback
        self._serial: Any = None
        self._write_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._serial is not None and bool(self._serial.is_open)

    def open(self) -> None:
        """Open the port (exclusively for device paths); `DeviceGone` when it is not there."""
        if self.is_open:
            return
        kwargs: dict[str, Any] = {
            "baudrate": self.baudrate,
            "timeout": self.inter_char_timeout,
            "write_timeout": 1.0,
        }
        if "://" not in self.port:
            kwargs["exclusive"] = self.exclusive
        try:
            self._serial = serial.serial_for_url(self.port, **kwargs)
        except ValueError as exc:
            raise DeviceError(f"{self.name}: bad port settings for {self.port}: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            raise DeviceGone(f"{self.name}: cannot open {self.port}: {exc}") from exc
        self.decoder.flush()  # drop anything left from a previous connection

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            # Closing a vanished device may fail; it is closed either way.
            with contextlib.suppress(serial.SerialException, OSError):
                ser.close()

    def __enter__(self) -> SerialScanner:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read_frames(self, stop: threading.Event) -> Iterator[ScanRead]:
        """Yield a ScanRead per frame until `stop` is set; raise `DeviceGone` when unplugged.

        Bad bytes come out as reads with `error`; a frame cut short by unplugging is yielded
        (truncated) before `DeviceGone` is raised.
        """
        self.open()
        ser = self._serial
        last_byte = time.monotonic()
        while not stop.is_set():
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as exc:
                partial = self.decoder.flush()
                self.close()
                if partial is not None:
                    yield to_scan_read(self.name, partial, encoding=self.encoding)
                raise DeviceGone(f"{self.name}: {self.port} gone: {exc}") from exc
            if data:
                last_byte = time.monotonic()
                for frame in self.decoder.feed(data):
                    yield to_scan_read(self.name, frame, encoding=self.encoding)
            elif self.decoder.pending and time.monotonic() - last_byte >= self.inter_char_timeout:
                frame_or_none = self.decoder.flush()
                if frame_or_none is not None:
                    yield to_scan_read(self.name, frame_or_none, encoding=self.encoding)

    def write(self, data: bytes) -> None:
        """Send host bytes (feedback, trigger commands); thread-safe against other writers."""
        with self._write_lock:
            ser = self._serial
            if ser is None:
                raise DeviceGone(f"{self.name}: {self.port} is not open")
            try:
                ser.write(data)
                ser.flush()
            except (serial.SerialException, OSError) as exc:
                raise DeviceGone(f"{self.name}: write to {self.port} failed: {exc}") from exc

    def good_read(self) -> None:
        """Signal a good read (after the read is durable); no-op unless feedback is configured."""
        if self.good_read_feedback:
            self.write(self.good_read_feedback)

    def bad_read(self) -> None:
        """Signal a rejected read; no-op unless feedback is configured."""
        if self.bad_read_feedback:
            self.write(self.bad_read_feedback)

    def run_with_reopen(
        self,
        on_read: Callable[[ScanRead], None],
        stop: threading.Event,
        on_state: Callable[[bool], None] | None = None,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        """Read until `stop`, reopening after loss; `on_state(online)` on every change.

        After losing a connection that held, the first reopen is immediate; then waits double from
        `min_backoff` to `max_backoff`, jittered to half..full so hosts do not retry in step.
        """
        online: bool | None = None
        delay = 0.0  # 0: the next attempt is immediate

        def report(state: bool) -> None:
            nonlocal online
            if state is not online:
                online = state
                if on_state is not None:
                    on_state(state)

        def backoff(current: float) -> float:
            return min(max(current * 2, min_backoff), max_backoff)

        try:
            while not stop.is_set():
                if delay and stop.wait(random.uniform(delay / 2, delay)):
                    break
                try:
                    self.open()
                except DeviceGone:
                    report(False)
                    delay = backoff(delay)
                    continue
                report(True)
                opened = time.monotonic()
                try:
                    for read in self.read_frames(stop):
                        on_read(read)
                except DeviceGone:
                    report(False)
                # A connection that held resets the backoff; one that flaps keeps growing it.
                delay = 0.0 if time.monotonic() - opened >= max_backoff else backoff(delay)
        finally:
            self.close()
