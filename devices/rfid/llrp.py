"""LLRP fixed readers (Impinj Speedway/R700 in LLRP mode, Zebra FX) through sllurp: OPTIONAL.

Licence isolation: sllurp is GPL-3.0-only, floorsync is Apache-2.0. sllurp is therefore not a
dependency of floorsync but an optional extra (``floorsync[llrp]``), and only this module touches
it, only lazily inside functions (`_sllurp()`): importing `devices.rfid` or even this module never
imports sllurp, no other module imports this one, and everything else (Impinj/Zebra JSON over
MQTT or HTTP, serial readers) works without it. Whoever installs the extra and distributes the
combination takes on the GPL terms for that distribution; a deployment that must stay free of GPL
code uses the readers' JSON interfaces instead.

What is used from sllurp 3.0.5: `LLRPReaderClient` (connects, configures the ROSpec, runs its
own socket thread and calls back with each RO_ACCESS_REPORT's TagReportData) and `LLRPMessage`
(its message decoder). sllurp's own reconnect is switched off: `supervise` reconnects with our
capped, jittered backoff, and reports cross from sllurp's thread to ours through a queue, so
`on_read` runs on the thread that called `run`, like every other reader.

TagReportData fields (LLRP 1.0.1 §16.2.7.3, as sllurp decodes them): ``EPC`` (hexlified
bytes; sllurp also keeps ``EPC-96``), ``AntennaID``, ``PeakRSSI`` (dBm, integer),
``ImpinjPeakRSSI`` (centi-dBm, preferred when present), ``FirstSeenTimestampUTC`` /
``LastSeenTimestampUTC`` (microseconds since the Unix epoch), ``TagSeenCount``. Which of them come
is the ROSpec's TagReportContentSelector: `DEFAULT_CONFIG` enables them all; without a UTC
timestamp the host time is used.
"""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from floorsync.devices.base import DeviceError, DeviceGone, TagRead
from floorsync.devices.rfid.base import (
    OnError,
    OnRead,
    OnState,
    Parsed,
    ParseError,
    clip,
    host_time,
    normalize_epc,
    parse_antenna,
    parse_float,
    parse_int,
    parse_seen,
    report_errors,
    supervise,
)

LLRP_PORT = 5084
RO_ACCESS_REPORT = 61
HEADER = struct.Struct(">HII")  # 3 reserved bits, 3 version bits, 10 type bits; length; id
MAX_MESSAGE = 1 << 20

DEFAULT_CONFIG: dict[str, Any] = {
    "start_inventory": True,
    "reconnect": False,  # ours, not sllurp's (which waits a fixed 60 s)
    "antennas": [0],  # 0: all antennas
    "report_every_n_tags": 1,
    "tag_content_selector": {
        "EnableROSpecID": False,
        "EnableSpecIndex": False,
        "EnableInventoryParameterSpecID": False,
        "EnableAntennaID": True,
        "EnableChannelIndex": False,
        "EnablePeakRSSI": True,
        "EnableFirstSeenTimestamp": True,
        "EnableLastSeenTimestamp": True,
        "EnableTagSeenCount": True,
        "EnableAccessSpecID": False,
    },
}


def _sllurp() -> Any:
    """The sllurp package, imported on first use; a clear `DeviceError` when it is missing."""
    try:
        import sllurp.llrp
    except ImportError as exc:
        raise DeviceError(
            "LLRP readers need the optional GPL-3.0 extra: pip install 'floorsync[llrp]'"
        ) from exc
    return sllurp.llrp


def reads_from_tag_reports(reader: str, tags: list[dict[str, Any]]) -> Parsed:
    """TagReads from sllurp's decoded TagReportData list (one RO_ACCESS_REPORT)."""
    out = Parsed()
    if not isinstance(tags, list):
        tags = [tags]
    for tag in tags:
        try:
            out.reads.append(_tag_read(reader, tag))
        except Exception as exc:  # whatever sllurp decoded, a bad report never raises out
            out.errors.append(ParseError(f"TagReportData: {exc}", clip(repr(tag).encode())))
    return out


def _tag_read(reader: str, tag: dict[str, Any]) -> TagRead:
    if not isinstance(tag, dict):
        raise ValueError("not a parameter dict")
    epc_value = tag.get("EPC", tag.get("EPC-96"))
    if epc_value is None:
        raise ValueError("no EPC")
    epc = normalize_epc(epc_value)
    antenna = parse_antenna(tag["AntennaID"], "AntennaID") if "AntennaID" in tag else 0
    rssi: float | None = None
    if tag.get("ImpinjPeakRSSI") is not None:  # sllurp decodes it to a plain int
        rssi = parse_float(tag["ImpinjPeakRSSI"], "ImpinjPeakRSSI") / 100.0
    elif tag.get("PeakRSSI") is not None:
        rssi = parse_float(tag["PeakRSSI"], "PeakRSSI")
    stamp = tag.get("LastSeenTimestampUTC", tag.get("FirstSeenTimestampUTC"))
    at = _utc_microseconds(stamp) if stamp is not None else host_time()
    seen = parse_seen(tag["TagSeenCount"], "TagSeenCount") if "TagSeenCount" in tag else 1
    return TagRead(reader=reader, epc=epc, antenna=antenna, rssi=rssi, at=at, seen=seen)


def _utc_microseconds(value: object) -> datetime:
    micros = parse_int(value, "timestamp", 0)
    try:
        return datetime.fromtimestamp(micros / 1e6, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp out of range: {micros} µs") from exc


class LlrpStreamDecoder:
    """LLRP bytes from a reader (a capture, or a socket) to TagReads, fed in any slices.

    Framing (the 10-byte LLRP header, LLRP 1.0.1 §15.1) is ours; each whole message is decoded by
    sllurp's `LLRPMessage`. Messages other than RO_ACCESS_REPORT are skipped. A message sllurp
    cannot decode is reported and skipped; a header that cannot be LLRP (bad version, absurd
    length) is reported and the buffer dropped, since a byte stream cannot resynchronise.
    """

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self._buf = bytearray()
        self._llrp = _sllurp()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Parsed:
        self._buf += data
        out = Parsed()
        while len(self._buf) >= HEADER.size:
            type_word, length, _msg_id = HEADER.unpack_from(self._buf)
            version = (type_word >> 10) & 0x7
            if version not in (1, 2) or not HEADER.size <= length <= MAX_MESSAGE:
                out.errors.append(
                    ParseError(
                        f"not an LLRP header (version {version}, length {length})",
                        clip(bytes(self._buf)),
                    )
                )
                self._buf.clear()
                break
            if len(self._buf) < length:
                break
            message = bytes(self._buf[:length])
            del self._buf[:length]
            if type_word & 0x3FF != RO_ACCESS_REPORT:
                continue
            try:
                decoded = self._llrp.LLRPMessage(msgbytes=message).msgdict
                tags = decoded["RO_ACCESS_REPORT"].get("TagReportData", [])
            except Exception as exc:  # sllurp raises LLRPError, struct.error, KeyError...
                out.errors.append(ParseError(f"undecodable RO_ACCESS_REPORT: {exc}", clip(message)))
                continue
            out.extend(reads_from_tag_reports(self.reader, tags))
        return out

    def finish(self) -> Parsed:
        """End of stream: a partial message left over is reported as truncated."""
        out = Parsed()
        if self._buf:
            out.errors.append(ParseError("truncated LLRP message", clip(bytes(self._buf))))
            self._buf.clear()
        return out


class LlrpTagReader:
    """A fixed reader over LLRP (TCP 5084) through sllurp; `config` overrides `DEFAULT_CONFIG`."""

    def __init__(
        self,
        host: str,
        *,
        name: str,
        port: int = LLRP_PORT,
        config: dict[str, Any] | None = None,
        on_error: OnError | None = None,
        timeout: float = 5.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.config = {**DEFAULT_CONFIG, **(config or {}), "reconnect": False}
        self.on_error = on_error
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        llrp = _sllurp()

        def session(mark_online: Callable[[], None]) -> None:
            reports: queue.Queue[Parsed] = queue.Queue()
            lost = threading.Event()
            client = llrp.LLRPReaderClient(
                self.host,
                self.port,
                config=llrp.LLRPReaderConfig(self.config),
                timeout=self.timeout,
            )
            client.add_tag_report_callback(
                lambda _client, tags: reports.put(reads_from_tag_reports(self.name, tags))
            )
            client.add_disconnected_callback(lambda _client: lost.set())
            try:
                client.connect()
            except Exception as exc:  # socket errors, ReaderConfigurationError
                client.hard_disconnect()
                raise DeviceGone(f"{self.name}: cannot connect to {self.host}: {exc}") from exc
            mark_online()
            try:
                while not stop.is_set():
                    try:
                        parsed = reports.get(timeout=0.1)
                    except queue.Empty:
                        if lost.is_set() or not client.is_alive():
                            raise DeviceGone(f"{self.name}: LLRP connection lost") from None
                        continue
                    report_errors(self.on_error, parsed.errors)
                    for read in parsed.reads:
                        on_read(read)
            finally:
                if stop.is_set():
                    client.disconnect(timeout=self.timeout)
                client.hard_disconnect()

        supervise(
            session, stop, on_state, min_backoff=self.min_backoff, max_backoff=self.max_backoff
        )
