"""Byte framing for scanners, kept apart from I/O so it can be tested byte by byte.

Serial reads return arbitrary slices of the stream (pyserial's `read_until` even returns partial
data on timeout), so the decoder keeps a buffer across `feed` calls and only the I/O loop knows
when the line went quiet: it then calls `flush`.

Choices:
- Line suffixes (CR, LF, CRLF) are interchangeable: with any of them configured, a lone CR or LF
  ends a frame and empty frames are dropped, so CRLF yields one frame even when a scanner is
  configured differently from the host, and a CRLF split across two reads still frames once.
- Other suffixes (TAB, custom bytes) are matched exactly, also when split across reads.
- `suffix=b""` means the scanner sends no suffix: frames end on silence (`flush`), without error.
- `stx_etx=True` frames STX..ETX and ignores `suffix`; whitespace between frames is dropped,
  other bytes there are reported as garbage.
- A frame longer than `max_length` is reported once (first `max_length` bytes) and the rest is
  discarded until the next terminator, so memory stays bounded and the stream resynchronises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from floorsync.devices.base import ScanRead, now

STX = 0x02
ETX = 0x03
_LINE_SUFFIXES = (b"\r", b"\n", b"\r\n")


@dataclass(frozen=True)
class Frame:
    """One framed code (prefix and suffix removed), or bytes that failed framing (`error` set)."""

    data: bytes
    error: str | None = None


class FrameDecoder:
    """Incremental framer: `feed` bytes as they arrive, `flush` after an inter-character timeout."""

    def __init__(
        self,
        suffix: bytes = b"\r",
        prefix: bytes = b"",
        stx_etx: bool = False,
        max_length: int = 4096,
    ) -> None:
        if max_length < 1:
            raise ValueError("max_length must be positive")
        self.suffix = suffix
        self.prefix = prefix
        self.stx_etx = stx_etx
        self.max_length = max_length
        self._line = suffix in _LINE_SUFFIXES
        self._buf = bytearray()
        self._discarding = False  # after an overlong frame, until the next terminator
        self._in_frame = False  # STX/ETX mode: an STX was seen and its ETX not yet

    @property
    def pending(self) -> bool:
        """True when bytes wait for a terminator (the I/O loop flushes them on silence)."""
        return bool(self._buf) or self._in_frame

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the frames they complete, in order."""
        self._buf += data
        if self.stx_etx:
            return self._feed_stx_etx()
        return self._feed_suffix()

    def flush(self) -> Frame | None:
        """End the current frame on silence: a partial frame comes back marked truncated."""
        data = bytes(self._buf)
        self._buf.clear()
        discarding, self._discarding = self._discarding, False
        in_frame, self._in_frame = self._in_frame, False
        if discarding:
            return None
        if self.stx_etx:
            if in_frame:
                return Frame(data[: self.max_length], "truncated: no ETX before timeout")
            if data.strip():
                return Frame(data[: self.max_length], "garbage outside STX/ETX")
            return None
        if not data:
            return None
        if not self.suffix:
            return self._finish(data)
        frame = self._finish(data)
        if frame is None or frame.error:
            return frame
        return Frame(frame.data, "truncated: no suffix before timeout")

    def _find_terminator(self) -> tuple[int, int]:
        if self._line:
            cr, lf = self._buf.find(b"\r"), self._buf.find(b"\n")
            hits = [i for i in (cr, lf) if i >= 0]
            return (min(hits), 1) if hits else (-1, 0)
        if not self.suffix:
            return -1, 0
        return self._buf.find(self.suffix), len(self.suffix)

    def _feed_suffix(self) -> list[Frame]:
        out: list[Frame] = []
        while True:
            idx, size = self._find_terminator()
            if idx < 0:
                break
            chunk = bytes(self._buf[:idx])
            del self._buf[: idx + size]
            if self._discarding:
                self._discarding = False
                continue
            frame = self._finish(chunk)
            if frame is not None:
                out.append(frame)
        keep = 0 if self._line else max(len(self.suffix) - 1, 0)
        if self._discarding:
            # Keep only what could be the start of a split multi-byte suffix.
            del self._buf[: len(self._buf) - keep]
        elif len(self._buf) > self.max_length + keep:
            out.append(self._overlong(bytes(self._buf)))
            del self._buf[: len(self._buf) - keep]
            self._discarding = True
        return out

    def _feed_stx_etx(self) -> list[Frame]:
        out: list[Frame] = []
        while self._buf:
            if not self._in_frame:
                start = self._buf.find(STX)
                if start < 0:
                    if len(self._buf) > self.max_length:
                        out.append(
                            Frame(bytes(self._buf[: self.max_length]), "garbage outside STX/ETX")
                        )
                        self._buf.clear()
                    break
                junk = bytes(self._buf[:start])
                del self._buf[: start + 1]
                self._in_frame = True
                if junk.strip():
                    out.append(Frame(junk[: self.max_length], "garbage outside STX/ETX"))
                continue
            end, restart = self._buf.find(ETX), self._buf.find(STX)
            if restart >= 0 and (end < 0 or restart < end):
                # A new STX before this frame's ETX: the earlier frame was cut short.
                partial = bytes(self._buf[:restart])
                del self._buf[:restart]
                self._in_frame = False
                if not self._discarding:
                    out.append(Frame(partial[: self.max_length], "truncated: STX before ETX"))
                self._discarding = False
                continue
            if end < 0:
                if self._discarding:
                    self._buf.clear()
                elif len(self._buf) > self.max_length:
                    out.append(self._overlong(bytes(self._buf)))
                    self._buf.clear()
                    self._discarding = True
                break
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._in_frame = False
            if self._discarding:
                self._discarding = False
                continue
            frame = self._finish(chunk)
            if frame is not None:
                out.append(frame)
        return out

    def _overlong(self, data: bytes) -> Frame:
        return Frame(data[: self.max_length], f"overlong: more than {self.max_length} bytes")

    def _finish(self, chunk: bytes) -> Frame | None:
        if self.prefix:
            if not chunk.startswith(self.prefix):
                return Frame(chunk[: self.max_length], "missing prefix") if chunk.strip() else None
            chunk = chunk[len(self.prefix) :]
        if not chunk:
            return None
        if len(chunk) > self.max_length:
            return self._overlong(chunk)
        return Frame(chunk)


def split_aim(text: str) -> tuple[str | None, str]:
    """Split an AIM symbology identifier (ISO/IEC 15424: `]`, code char, modifier) off `text`."""
    if (
        len(text) >= 3
        and text[0] == "]"
        and text[1].isascii()
        and text[1].isalpha()
        and text[2].isascii()
        and text[2].isalnum()
    ):
        return text[:3], text[3:]
    return None, text


def to_scan_read(
    device: str, frame: Frame, *, encoding: str = "utf-8", at: datetime | None = None
) -> ScanRead:
    """Turn a frame into a ScanRead; undecodable bytes become an error, never an exception."""
    when = at if at is not None else now()
    try:
        decoded = frame.data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        reason = f"undecodable as {encoding}: {exc}"
        error = f"{frame.error}; {reason}" if frame.error else reason
        return ScanRead(device, None, frame.data, None, when, error)
    symbology, text = split_aim(decoded)
    return ScanRead(device, text, frame.data, symbology, when, frame.error)
