"""Impinj IoT device interface (R700/R720 firmware 7.x/8.x) tag events, as JSON.

The reader pushes its event stream over HTTP streaming (JSON lines), MQTT or Kafka (one event
per message) or webhook POSTs; JSON arrays of events (batches) are accepted as well. Format, from
Impinj's own material:

- Impinj IoT Device Interface API overview and OpenAPI specification
  (https://support.impinj.com/hc/en-us/articles/32123172324755,
  https://platform.impinj.com/site/docs/reader_api/index.gsp);
- the example event stream in Impinj's "IoT Device Interface Protected Mode Example" README
  (© Impinj; a copy is in github.com/MrAbduazim/accounting RFID_SDK/Impinj/README.md)::

    {"timestamp":"2021-07-09T23:35:59.278427551Z","hostname":"impinj-13-f8-f5",
     "tagInventoryEvent":{"epcHex":"E2801190A5021F80055817CA","antennaPort":1,
                          "peakRssiCdbm":-2650,"transmitPowerCdbm":3000}}

  Firmware 8 adds ``"eventType": "tagInventory"``; other event types (``inventoryStatus``,
  ``antennaConnected``, ...) carry their own ``<type>Event`` object and are skipped here.

Fields used: ``tagInventoryEvent.epcHex`` (or ``epc``, base64, when only that is enabled in the
preset's ``eventConfig.tagInventory``), ``antennaPort``, ``peakRssiCdbm`` (centi-dBm: -2650 is
-26.5 dBm), ``lastSeenTime`` when enabled, else the envelope ``timestamp`` (ISO 8601 UTC, up to
nanoseconds, truncated to microseconds). Antenna 0 means "not reported" (``antennaPort``
disabled). The reader name is the configured one, else ``hostname``.
"""

from __future__ import annotations

import base64
import binascii
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
    parse_timestamp,
)


def parse_impinj(data: bytes, reader: str | None = None) -> Parsed:
    """TagReads from Impinj IoT device interface JSON (one event, an array, or JSON lines)."""
    out = Parsed()
    for item in json_events(data):
        if isinstance(item, ParseError):
            out.errors.append(item)
            continue
        event, raw = item
        try:
            read = _tag_read(event, reader)
        except ValueError as exc:
            out.errors.append(ParseError(str(exc), clip(raw)))
            continue
        if read is not None:
            out.reads.append(read)
    return out


def _tag_read(event: Any, reader: str | None) -> TagRead | None:
    if not isinstance(event, dict):
        raise ValueError(f"Impinj event is not an object: {type(event).__name__}")
    tag = event.get("tagInventoryEvent")
    if tag is None:
        event_type = event.get("eventType")
        if isinstance(event_type, str) and event_type != "tagInventory":
            return None  # another event type: not a tag read, not an error
        if any(key.endswith("Event") for key in event):
            return None
        raise ValueError("not an Impinj event: no tagInventoryEvent")
    if not isinstance(tag, dict):
        raise ValueError("tagInventoryEvent is not an object")
    if tag.get("epcHex") is not None:
        epc = normalize_epc(tag["epcHex"])
    elif tag.get("epc") is not None:
        epc = _base64_epc(tag["epc"])
    else:
        raise ValueError("tagInventoryEvent has neither epcHex nor epc")
    antenna = parse_antenna(tag["antennaPort"], "antennaPort") if "antennaPort" in tag else 0
    rssi = (
        parse_float(tag["peakRssiCdbm"], "peakRssiCdbm") / 100.0
        if tag.get("peakRssiCdbm") is not None
        else None
    )
    stamp = tag.get("lastSeenTime") or event.get("timestamp")
    if stamp is None:
        raise ValueError("Impinj event has no timestamp")
    name = reader or event.get("hostname") or "impinj"
    return TagRead(
        reader=str(name), epc=epc, antenna=antenna, rssi=rssi, at=parse_timestamp(stamp)
    )


def _base64_epc(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("epc is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"epc is not base64: {value[:64]!r}") from exc
    return normalize_epc(raw.hex())  # the same length rules as epcHex
