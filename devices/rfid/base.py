"""The one RFID reader interface, and what every reader shares.

A reader is anything with a `name` and a blocking `run(on_read, stop, on_state)`: it delivers
`devices.base.TagRead`s until `stop` is set, reconnecting by itself (capped, jittered backoff) and
calling `on_state(online)` once per change. Serial readers, MQTT and HTTP push from fixed readers,
file replay, the simulator and LLRP (through the optional sllurp extra) all look alike to callers.

Bad input never raises out of a reader: garbage lines, non-hex EPCs, truncated JSON and missing
fields are reported through the reader's optional `on_error(reason, raw)` and reading goes on.
Readers do not deduplicate: fixed readers report each tag in the field over and over, and MQTT
QoS 1 redelivers after reconnects; smoothing belongs to the consumer.

Format parsers are pure functions from bytes to `Parsed` (reads plus errors), so they are tested
byte by byte and shared by every transport (MQTT, HTTP, files).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from devices.base import DeviceGone, TagRead, now

OnRead = Callable[[TagRead], None]
OnState = Callable[[bool], None]
OnError = Callable[[str, bytes], None]


@runtime_checkable
class TagReader(Protocol):
    """What every RFID reader offers; `run` blocks until `stop` is set."""

    name: str

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        """Deliver reads until `stop`; reconnect by itself; `on_state(online)` on every change."""
        ...


class ParseError(NamedTuple):
    """Input that did not become a read: why, and the bytes concerned (possibly cut short)."""

    reason: str
    raw: bytes


@dataclass
class Parsed:
    """What a parser made of some bytes: reads, and errors for the parts it could not use."""

    reads: list[TagRead] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)

    def extend(self, other: Parsed) -> None:
        self.reads.extend(other.reads)
        self.errors.extend(other.errors)


Parser = Callable[[bytes], Parsed]

MAX_RAW = 512  # bytes of bad input kept in an error report


def clip(raw: bytes) -> bytes:
    return raw[:MAX_RAW]


def report_errors(on_error: OnError | None, errors: list[ParseError]) -> None:
    if on_error is not None:
        for error in errors:
            on_error(error.reason, error.raw)


def normalize_epc(value: object) -> str:
    """An EPC as upper-case hex; `ValueError` for anything else (empty, non-hex, odd length).

    Accepts str or bytes (sllurp hands out hexlified bytes); surrounding whitespace is dropped.
    """
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError("EPC is not ASCII hex") from exc
    if not isinstance(value, str):
        raise ValueError(f"EPC is not a string: {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("empty EPC")
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"EPC is not hex: {text[:64]!r}")
    if len(text) % 2:
        raise ValueError(f"EPC has an odd number of hex digits: {text[:64]!r}")
    return text.upper()


def parse_int(value: object, what: str, minimum: int | None = None) -> int:
    """An integer from int or decimal text (not bool, not a fractional float)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} is not an integer: {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        result = int(value.strip())
    else:
        raise ValueError(f"{what} is not an integer: {value!r}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{what} below {minimum}: {result}")
    return result


def parse_float(value: object, what: str) -> float:
    """A finite float from a number or decimal text."""
    if isinstance(value, bool):
        raise ValueError(f"{what} is not a number: {value!r}")
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not a number: {value!r}") from exc
    if not math.isfinite(result):
        raise ValueError(f"{what} is not finite: {value!r}")
    return result


def parse_timestamp(value: object) -> datetime:
    """A reader timestamp as an aware datetime.

    Text is ISO 8601 (`Z`, `+00:00` and `+0000` offsets, up to nanosecond fractions, as the Impinj
    and Zebra JSON carry); text without an offset is taken as UTC. Numbers are Unix epoch time,
    told apart by size: seconds (< 1e11), milliseconds (< 1e14), else microseconds.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"not a timestamp: {value!r}")
        seconds = number if number < 1e11 else number / 1e3 if number < 1e14 else number / 1e6
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp out of range: {value!r}") from exc
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:64]!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iter_json(data: bytes) -> Iterator[tuple[Any, bytes] | ParseError]:
    """JSON values in `data`, with the bytes each came from.

    Accepts one value, JSON lines, or values simply concatenated (Zebra's TCP/WebSocket stream
    sends `}{` with no separator). A value that fails to parse (garbage, truncation) becomes a
    ParseError and decoding resumes at the next line, so one bad line costs only itself.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield ParseError(f"not UTF-8: {exc.reason} at byte {exc.start}", clip(data))
        return
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= end:
            return
        try:
            value, stop = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            newline = text.find("\n", pos)
            bad_end = end if newline < 0 else newline
            raw = text[pos:bad_end].encode("utf-8")
            # Cut short: the parser ran out of input (or of a string still open at the end).
            cut = exc.pos >= len(text[:bad_end].rstrip()) or exc.msg.startswith("Unterminated")
            kind = "truncated JSON" if cut else "invalid JSON"
            yield ParseError(f"{kind}: {exc.msg} at char {exc.pos - pos}", clip(raw))
            pos = bad_end
            continue
        yield value, text[pos:stop].encode("utf-8")
        pos = stop


def json_events(data: bytes) -> Iterator[tuple[Any, bytes] | ParseError]:
    """Like `iter_json`, with top-level arrays (webhook batches) flattened into their items."""
    for item in iter_json(data):
        if isinstance(item, ParseError):
            yield item
            continue
        value, raw = item
        if isinstance(value, list):
            for element in value:
                yield element, json.dumps(element).encode("utf-8")
        else:
            yield value, raw


def supervise(
    session: Callable[[Callable[[], None]], None],
    stop: threading.Event,
    on_state: OnState | None = None,
    *,
    min_backoff: float = 0.1,
    max_backoff: float = 5.0,
) -> None:
    """Run `session(mark_online)` again and again until `stop`, with `on_state` per change.

    A session connects, calls `mark_online()` once it delivers, and returns when `stop` is set or
    raises `DeviceGone` when the connection is lost or cannot be made. As in
    `SerialScanner.run_with_reopen`: after a connection that held (at least `max_backoff`), the
    first retry is immediate; then waits double from `min_backoff` up to `max_backoff`, each
    jittered to half..full so a fleet of edge hosts does not retry in step.
    """
    online: bool | None = None
    delay = 0.0

    def report(state: bool) -> None:
        nonlocal online
        if state is not online:
            online = state
            if on_state is not None:
                on_state(state)

    def backoff(current: float) -> float:
        return min(max(current * 2, min_backoff), max_backoff)

    while not stop.is_set():
        if delay and stop.wait(random.uniform(delay / 2, delay)):
            break
        went_online: list[float] = []

        def mark_online(went_online: list[float] = went_online) -> None:
            if not went_online:
                went_online.append(time.monotonic())
            report(True)

        try:
            session(mark_online)
        except DeviceGone:
            report(False)
        else:
            if stop.is_set():
                break
            report(False)  # a session that ended without stop counts as a loss
        held = bool(went_online) and time.monotonic() - went_online[0] >= max_backoff
        # A connection that held resets the backoff; one that flaps keeps growing it.
        delay = 0.0 if held else backoff(delay)


def host_time() -> datetime:
    """Host time (aware, UTC) for reads whose reader sent no time."""
    return now()
