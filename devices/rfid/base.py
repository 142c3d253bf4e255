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
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from floorsync.devices.base import DeviceGone, TagRead, now

log = logging.getLogger(__name__)

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
MAX_BAD_PARTS = 100  # bad JSON values in one payload before the rest of it is given up


def clip(raw: bytes) -> bytes:
    return raw[:MAX_RAW]


def report_errors(on_error: OnError | None, errors: list[ParseError]) -> None:
    if on_error is not None:
        for error in errors:
            on_error(error.reason, error.raw)


EPC_WORD_BITS = 16  # the EPC bank holds whole 16-bit words (Gen2 PC word: EPC length in words)
MAX_EPC_BITS = 496  # the largest EPC bank: 31 words (the PC word's 5-bit length field)
MAX_ANTENNA = 65535  # antenna numbers are 16-bit (LLRP AntennaID); 0: not reported
MAX_SEEN = 1_000_000  # more reads of one tag in one report than any reader makes


_HEX = re.compile(r"[0-9A-Fa-f]+")


def epc_problem(epc: object) -> str | None:
    """Why `epc` (upper- or lower-case hex text) cannot be a tag's EPC bank, or None.

    An EPC bank is a whole number of 16-bit words (hex length a multiple of 4), at least one and
    at most 31 (496 bits). The reasons start with ``"EPC"`` so callers can count them as one kind.
    """
    if not isinstance(epc, str):
        return f"EPC is not a string: {type(epc).__name__}"
    if not epc:
        return "EPC is empty"
    if not _HEX.fullmatch(epc):
        return f"EPC is not hex: {epc[:64]!r}"
    bits = len(epc) * 4
    if bits % EPC_WORD_BITS:
        return (
            f"EPC of {len(epc)} hex digits ({bits} bits) is not a whole number of "
            f"{EPC_WORD_BITS}-bit words"
        )
    if bits > MAX_EPC_BITS:
        return (
            f"EPC of {len(epc)} hex digits ({bits} bits) is longer than the largest EPC bank "
            f"({MAX_EPC_BITS} bits)"
        )
    return None


def normalize_epc(value: object) -> str:
    """An EPC as upper-case hex; `ValueError` for anything else (see `epc_problem`).

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
    problem = epc_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text.upper()


_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}")


def parse_int(
    value: object, what: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer from int or decimal text (not bool, not a fractional float), within bounds."""
    if isinstance(value, bool):
        raise ValueError(f"{what} is not an integer: {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        result = int(value.strip())
    else:
        raise ValueError(f"{what} is not an integer: {_short(value)}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{what} below {minimum}: {_short(result)}")
    if maximum is not None and result > maximum:
        raise ValueError(f"{what} above {maximum}: {_short(result)}")
    return result


def parse_antenna(value: object, what: str = "antenna") -> int:
    """An antenna number, 0 (not reported) to 65535."""
    return parse_int(value, what, 0, MAX_ANTENNA)


def parse_seen(value: object, what: str = "seen count") -> int:
    """A seen count (reads of the tag this report stands for), 1 to `MAX_SEEN`."""
    return parse_int(value, what, 1, MAX_SEEN)


def _short(value: object) -> str:
    text = repr(value) if not isinstance(value, int) else str(value)
    return text if len(text) <= 64 else text[:61] + "..."


def parse_float(value: object, what: str) -> float:
    """A finite float from a number or decimal text."""
    if isinstance(value, bool):
        raise ValueError(f"{what} is not a number: {_short(value)}")
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{what} is not a number: {_short(value)}") from exc
    if not math.isfinite(result):
        raise ValueError(f"{what} is not finite: {_short(value)}")
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
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"timestamp out of range: {_short(value)}") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"not a timestamp: {_short(value)}")
        seconds = number if number < 1e11 else number / 1e3 if number < 1e14 else number / 1e6
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp out of range: {_short(value)}") from exc
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {_short(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:64]!r}") from exc
    parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)  # an offset that takes it past year 1 or 9999: here, not later
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"timestamp out of range: {value[:64]!r}") from exc
    return parsed


def iter_json(data: bytes) -> Iterator[tuple[Any, bytes] | ParseError]:
    """JSON values in `data`, with the bytes each came from.

    Accepts one value, JSON lines, or values simply concatenated (Zebra's TCP/WebSocket stream
    sends `}{` with no separator). A value that fails to parse (garbage, truncation, nesting
    too deep, an integer too long) becomes a ParseError and decoding resumes at the next line, so
    one bad line costs only itself. After `MAX_BAD_PARTS` of them the rest of `data` is given up
    as one more ParseError: each costs a scan of `data` (json counts lines for its message), and a
    payload that bad is garbage, not a stream with a few bad lines.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield ParseError(f"not UTF-8: {exc.reason} at byte {exc.start}", clip(data))
        return
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    bad = 0
    while True:
        while pos < end and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= end:
            return
        try:
            value, stop = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            newline = text.find("\n", pos)
            bad_end = end if newline < 0 else newline
            raw = text[pos : min(bad_end, pos + MAX_RAW)].encode("utf-8")
            if isinstance(exc, json.JSONDecodeError):
                last = bad_end  # the line's end without trailing blanks
                while last > pos and text[last - 1] in " \t\r\ufeff":
                    last -= 1
                # Cut short: the parser ran out of input (or of a string still open at the end).
                cut = exc.pos >= last or exc.msg.startswith("Unterminated")
                kind = "truncated JSON" if cut else "invalid JSON"
                reason = f"{kind}: {exc.msg} at char {exc.pos - pos}"
            elif isinstance(exc, RecursionError):
                reason = "invalid JSON: nested too deep"
            else:  # an integer too long to convert, ...
                reason = f"invalid JSON: {str(exc)[:80]}"
            yield ParseError(reason, clip(raw))
            pos = bad_end
            bad += 1
            if bad >= MAX_BAD_PARTS and (rest := text[pos:].lstrip()):
                yield ParseError(
                    f"gave up after {bad} bad parts: {len(rest.encode('utf-8'))} bytes skipped",
                    clip(rest[:MAX_RAW].encode("utf-8")),
                )
                return
            continue
        yield value, text[pos:stop].encode("utf-8")
        pos = stop


def json_events(data: bytes) -> Iterator[tuple[Any, bytes] | ParseError]:
    """Like `iter_json`, with top-level arrays (webhook batches) flattened into their items."""
    if data[:1] == b"{":  # one event per message, as network readers send: the short way
        try:
            value = json.loads(data)
        except Exception:  # anything odd: the careful way below says what
            pass
        else:
            if isinstance(value, dict):
                yield value, data
                return
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


MAX_REASONS_SAID = 8  # distinct reasons logged in one outage (a reason may carry a changing detail)


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
    said: set[str] = set()  # the reasons logged since the reader was last online

    def report(state: bool) -> None:
        nonlocal online
        if state:
            said.clear()
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
        except DeviceGone as exc:
            # why, once per reason and outage: not per retry, even when two reasons alternate
            if str(exc) not in said and len(said) < MAX_REASONS_SAID:
                said.add(str(exc))
                log.warning("%s; retrying", exc)
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
