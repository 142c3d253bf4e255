"""Scanners in keyboard-wedge (USB HID keyboard) mode, through python-evdev.

Each scanner's event device is opened with `evdev.InputDevice` and grabbed (`EVIOCGRAB`) so its
key presses stop reaching the console or a desktop; a `KeyDecoder` per device turns its key events
into codes with the scanner's own layout; the AIM id is split off as for serial scanners.

`WedgeHub` runs any number of scanners on one thread, waiting on all their descriptors with one
selector (epoll on Linux). Chosen over a thread per device because the work per event is tiny,
the devices are non-blocking, `on_read` is then called from a single thread (consumers need no
locking and reads of one device keep their order), the same loop handles silence timeouts and
reopen schedules, and it costs no thread per extra scanner.

The reading loop needs only an `EventSource` (`fileno()`, evdev's `read()`, `close()`), so tests
and diagnostics can feed it `PipeEvents`: evdev's own reader over a pipe that carries packed
`struct input_event` records.

Hot-plug: an unplugged device makes evdev's read fail (`OSError`, ENODEV); a pipe reports EOF.
Either way the scanner goes offline (a partial code is delivered as truncated first) and its path
is polled with capped, jittered backoff until it can be opened again. Address devices by
`/dev/input/by-id/...-event-kbd`, which udev recreates for the same scanner.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import selectors
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import evdev
from evdev.eventio import EventIO

from floorsync.devices.base import DeviceGone, ScanRead, now
from floorsync.devices.framing import split_aim
from floorsync.devices.keymap import DEFAULT_TERMINATORS, DecodedCode, KeyDecoder

EVENT_FORMAT = "llHHi"  # struct input_event on 64-bit Linux: sec, usec, type, code, value
EVENT_SIZE = struct.calcsize(EVENT_FORMAT)


class EventSource(Protocol):
    """What the reading loop needs: evdev's `InputDevice` or `PipeEvents` both fit."""

    def fileno(self) -> int: ...

    def read(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class PipeEvents(EventIO):
    """evdev's reader (`EventIO.read`, `read_one`, `read_loop`) over a pipe, for tests/diagnostics.

    `fd` is the read end; it is made non-blocking like an evdev device. A closed write end reads
    as an empty batch, which the scanner treats as the device going away.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def pack_events(events: Iterable[tuple[int, int, int, int, int]]) -> bytes:
    """Pack (sec, usec, type, code, value) tuples as `struct input_event` records."""
    return b"".join(struct.pack(EVENT_FORMAT, *event) for event in events)


def open_input_device(path: str, *, grab: bool = True) -> evdev.InputDevice:
    """Open an event device, grabbed by default (its keys then reach no one else)."""
    device = evdev.InputDevice(path)
    if grab:
        try:
            device.grab()
        except OSError:
            device.close()
            raise
    return device


class WedgeScanner:
    """One keyboard-wedge scanner. `layout` is the scanner's configured keyboard country."""

    def __init__(
        self,
        path: str,
        *,
        name: str,
        layout: str = "us",
        grab: bool = True,
        inter_key_timeout: float = 0.1,
        terminators: Iterable[str] = DEFAULT_TERMINATORS,
        opener: Callable[[str], EventSource] | None = None,
    ) -> None:
        self.path = path
        self.name = name
        self.grab = grab
        self.decoder = KeyDecoder(
            layout, inter_key_timeout=inter_key_timeout, terminators=terminators
        )
        self._opener = opener
        self._source: EventSource | None = None
        self._last_event = 0.0  # monotonic time of the last event read
        #: Why the device is offline (open or read error), for diagnostics.
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self._source is not None

    @property
    def device_name(self) -> str | None:
        """The kernel's name for the open device (evdev sources only)."""
        name = getattr(self._source, "name", None)
        return name if isinstance(name, str) else None

    def fileno(self) -> int:
        if self._source is None:
            raise DeviceGone(f"{self.name}: {self.path} is not open")
        return self._source.fileno()

    def open(self) -> None:
        """Open (and grab) the device; `DeviceGone` when absent, unreadable or grabbed elsewhere."""
        if self._source is not None:
            return
        try:
            if self._opener is not None:
                source = self._opener(self.path)
            else:
                source = open_input_device(self.path, grab=self.grab)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                self.last_error = f"{self.path} is grabbed by another process"
            else:
                self.last_error = f"cannot open {self.path}: {exc}"
            raise DeviceGone(f"{self.name}: {self.last_error}") from exc
        self._source = source
        self.last_error = None
        self.decoder.reset()
        self._last_event = time.monotonic()

    def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            # Closing a vanished device may fail; it is closed either way.
            with contextlib.suppress(OSError):
                source.close()

    def __enter__(self) -> WedgeScanner:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def to_scan_read(self, code: DecodedCode) -> ScanRead:
        """A decoded code as a ScanRead (AIM id split, raw = the decoded text as UTF-8)."""
        try:
            at = datetime.fromtimestamp(code.at, UTC)
        except (OverflowError, OSError, ValueError):
            at = now()  # a nonsense event time must not lose the read
        if code.text is None:
            return ScanRead(self.name, None, b"", None, at, code.error)
        symbology, text = split_aim(code.text)
        return ScanRead(self.name, text, code.text.encode("utf-8"), symbology, at, code.error)

    def read_ready(self) -> list[ScanRead]:
        """Read and decode what the device has now (call when its fd is readable).

        On loss (read error or EOF) the scanner closes itself, `last_error` says why, and a
        partial code comes back marked truncated; callers check `is_open` afterwards.
        """
        source = self._source
        if source is None:
            return []
        gone: str | None = None
        codes: list[DecodedCode] = []
        try:
            count = 0
            feed = self.decoder.feed
            for event in source.read():
                count += 1
                done = feed(event.type, event.code, event.value, event.sec + event.usec / 1e6)
                if done:
                    codes.extend(done)
            if count == 0:
                gone = "end of stream"
        except BlockingIOError:
            pass  # nothing after all
        except OSError as exc:
            gone = str(exc) if exc.errno != errno.ENODEV else "device unplugged"
        self._last_event = time.monotonic()
        if gone is not None:
            partial = self.decoder.flush(time.time())
            if partial is not None:
                reason = f"truncated: device gone ({gone})"
                codes.append(DecodedCode(partial.text, reason, partial.at))
            self.last_error = f"{self.path}: {gone}"
            self.close()
        return [self.to_scan_read(code) for code in codes]

    def expire(self, monotonic_now: float) -> list[ScanRead]:
        """End a partial code after `inter_key_timeout` of silence (truncated, or complete when
        no terminators are configured)."""
        if not self.decoder.pending:
            return []
        if monotonic_now - self._last_event < self.decoder.inter_key_timeout:
            return []
        code = self.decoder.flush(time.time())
        return [self.to_scan_read(code)] if code is not None else []

    def expiry_due(self) -> float | None:
        """Monotonic time at which `expire` has work, or None when nothing is pending."""
        if not self.decoder.pending:
            return None
        return self._last_event + self.decoder.inter_key_timeout

    def read_scans(self, stop: threading.Event, *, tick: float = 0.1) -> Iterator[ScanRead]:
        """Yield reads until `stop` is set; raise `DeviceGone` (after a truncated partial code)
        when the device goes away."""
        self.open()
        with selectors.DefaultSelector() as selector:
            selector.register(self.fileno(), selectors.EVENT_READ)
            while not stop.is_set():
                due = self.expiry_due()
                wait = tick if due is None else max(0.0, min(tick, due - time.monotonic()))
                if selector.select(wait):
                    yield from self.read_ready()
                    if not self.is_open:
                        raise DeviceGone(f"{self.name}: {self.last_error}")
                yield from self.expire(time.monotonic())

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

        The same policy as `SerialScanner.run_with_reopen`: see `WedgeHub.run`.
        """
        state = None if on_state is None else (lambda _name, online: on_state(online))
        WedgeHub([self]).run(on_read, stop, state, min_backoff=min_backoff, max_backoff=max_backoff)


class _Slot:
    """Reopen bookkeeping of one scanner inside a hub."""

    def __init__(self, scanner: WedgeScanner) -> None:
        self.scanner = scanner
        self.online: bool | None = None
        self.delay = 0.0  # 0: the next attempt is immediate
        self.next_try = 0.0
        self.opened = 0.0
        self.fd: int | None = None  # registered with the selector while set


class WedgeHub:
    """Several wedge scanners on one thread: one selector over their descriptors."""

    def __init__(self, scanners: Sequence[WedgeScanner]) -> None:
        names = [s.name for s in scanners]
        if len(set(names)) != len(names):
            raise ValueError(f"scanner names must be unique: {names}")
        self.scanners = list(scanners)

    def run(
        self,
        on_read: Callable[[ScanRead], None],
        stop: threading.Event,
        on_state: Callable[[str, bool], None] | None = None,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 2.0,
        tick: float = 0.1,
    ) -> None:
        """Read every scanner until `stop`; `on_state(name, online)` on each scanner's changes.

        A scanner that cannot be opened, or goes away, is retried on its own: after losing a
        connection that held, the first reopen is immediate; then waits double from `min_backoff`
        to `max_backoff`, jittered to half..full. `stop` is checked at least every `tick` s.
        `on_read` and `on_state` run on this thread; an exception from them ends the run.
        """
        slots = [_Slot(s) for s in self.scanners]

        def report(slot: _Slot, online: bool) -> None:
            if online is not slot.online:
                slot.online = online
                if on_state is not None:
                    on_state(slot.scanner.name, online)

        def backoff(current: float) -> float:
            return min(max(current * 2, min_backoff), max_backoff)

        def schedule(slot: _Slot, delay: float, at: float) -> None:
            slot.delay = delay
            slot.next_try = at + (random.uniform(delay / 2, delay) if delay else 0.0)

        def lost(slot: _Slot, at: float) -> None:
            if slot.fd is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.unregister(slot.fd)
                slot.fd = None
            slot.scanner.close()
            report(slot, False)
            held = at - slot.opened >= max_backoff
            schedule(slot, 0.0 if held else backoff(slot.delay), at)

        selector = selectors.DefaultSelector()
        try:
            while not stop.is_set():
                clock = time.monotonic()
                for slot in slots:
                    if slot.fd is not None:
                        if not slot.scanner.is_open:  # closed behind the hub's back
                            lost(slot, clock)
                        continue
                    if clock < slot.next_try:
                        continue
                    try:
                        slot.scanner.open()  # a no-op when the caller opened it already
                        fd = slot.scanner.fileno()
                        selector.register(fd, selectors.EVENT_READ, slot)
                    except (DeviceGone, ValueError, OSError) as exc:
                        if slot.scanner.is_open:  # registration failed: not a usable fd
                            slot.scanner.last_error = f"unusable descriptor: {exc}"
                            slot.scanner.close()
                        report(slot, False)
                        schedule(slot, backoff(slot.delay), clock)
                        continue
                    slot.fd = fd
                    slot.opened = clock
                    report(slot, True)
                wait = tick
                for slot in slots:
                    due = slot.scanner.expiry_due() if slot.fd is not None else slot.next_try
                    if due is not None:
                        wait = min(wait, max(0.0, due - clock))
                if any(slot.fd is not None for slot in slots):
                    try:
                        ready = selector.select(wait)
                    except OSError:  # a descriptor closed under us: find it
                        ready = []
                        for slot in slots:
                            if slot.fd is None:
                                continue
                            try:
                                os.fstat(slot.fd)
                            except OSError:
                                slot.scanner.last_error = "descriptor closed"
                                lost(slot, time.monotonic())
                else:
                    ready = []
                    if stop.wait(wait):
                        break
                for key, _ in ready:
                    slot = key.data
                    if slot.fd is None:
                        continue
                    for read in slot.scanner.read_ready():
                        on_read(read)
                    if not slot.scanner.is_open:
                        lost(slot, time.monotonic())
                clock = time.monotonic()
                for slot in slots:
                    if slot.fd is not None:
                        for read in slot.scanner.expire(clock):
                            on_read(read)
        finally:
            selector.close()
            for slot in slots:
                slot.scanner.close()
