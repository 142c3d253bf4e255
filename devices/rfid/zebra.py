"""Zebra IoT Connector (FX7500, FX9600, ATR7000) tag data events, as JSON.

The reader's data interface pushes tag data over MQTT, HTTP POST, TCP or WebSocket
(Zebra IoT Connector documentation, https://zebradevs.github.io/rfid-ziotc-docs/). Each tag data
event is an envelope with ``type``, ``timestamp`` and a ``data`` object; with the default
("SIMPLE") tag metadata it looks like this (field names as in Zebra's IoT Connector docs, the
``TagReadEvent`` model of Zebra's own sample ZebraDevs/RFID-IoTConnector-MQTT-dotnet-DockDoorSample,
and the open decoder reelyactive/barnowl-zebra lib/zebradecoder.js)::

    {"type": "SIMPLE", "timestamp": "2025-05-09T15:04:12.310+0000",
     "data": {"MAC": "84:24:8D:FF:FF:FF", "antenna": 1, "eventNum": 231, "format": "epc",
              "idHex": "E28011606000020A1B2C3D4E", "peakRssi": -61, "reads": 2}}

``data.idHex`` is the EPC bank (or the TID, when ``format`` is ``"tid"``) in hex; ``peakRssi`` is
in dBm (peak since the last report when reports are filtered); ``reads`` is the seen count
(SEEN_COUNT metadata) and is absent when each read is reported. Over TCP/WebSocket events are
concatenated without a separator; with batching, a JSON array of events arrives: both are
accepted, as are JSON lines. The reader name is the configured one, else ``data.MAC``.
"""

from __future__ import annotations

from typing import Any

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import (
    Parsed,
    ParseError,
    clip,
    json_events,
    normalize_epc,
    parse_antenna,
    parse_float,
    parse_seen,
    parse_timestamp,
)


def parse_zebra(data: bytes, reader: str | None = None) -> Parsed:
    """TagReads from Zebra IoT Connector tag data events (object, array, lines, concatenated)."""
    out = Parsed()
    for item in json_events(data):
        if isinstance(item, ParseError):
            out.errors.append(item)
            continue
        event, raw = item
        try:
            out.reads.append(_tag_read(event, reader))
        except ValueError as exc:
            out.errors.append(ParseError(str(exc), clip(raw)))
    return out


def _tag_read(event: Any, reader: str | None) -> TagRead:
    if not isinstance(event, dict):
        raise ValueError(f"Zebra event is not an object: {type(event).__name__}")
    data = event.get("data")
    if not isinstance(data, dict):
        raise ValueError("not a Zebra tag data event: no data object")
    if data.get("idHex") is None:
        raise ValueError("Zebra tag data event has no data.idHex")
    epc = normalize_epc(data["idHex"])
    antenna = parse_antenna(data["antenna"]) if data.get("antenna") is not None else 0
    rssi = parse_float(data["peakRssi"], "peakRssi") if data.get("peakRssi") is not None else None
    seen = parse_seen(data["reads"], "reads") if data.get("reads") is not None else 1
    stamp = event.get("timestamp")
    if stamp is None:
        raise ValueError("Zebra tag data event has no timestamp")
    name = reader or data.get("MAC") or "zebra"
    return TagRead(
        reader=str(name), epc=epc, antenna=antenna, rssi=rssi, at=parse_timestamp(stamp), seen=seen
    )
