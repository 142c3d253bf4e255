"""A minimal LLRP 1.0.1 encoder for the messages our tests replay (no sllurp needed).

Written from the LLRP 1.0.1 specification (EPCglobal): message header §15.1 (3 reserved bits,
3 version bits, 10 type bits, u32 length, u32 id); TagReportData §16.2.7.3 (TLV type 240) with
TV parameters EPC-96 (13), AntennaID (1), PeakRSSI (6, s8 dBm), FirstSeenTimestampUTC (2, u64 µs),
LastSeenTimestampUTC (4), TagSeenCount (8, u16); EPCData (TLV 241, u16 bit count + bytes);
a vendor CustomParameter (TLV 1023: vendor id, subtype, payload) such as Impinj's
ImpinjPeakRSSI (vendor 25882, subtype 57, s16 centi-dBm).

`data/ro_access_reports.hex` was produced by `capture()` below; the test checks it still is.
"""

from __future__ import annotations

import struct

RO_ACCESS_REPORT = 61
KEEPALIVE = 62
IMPINJ = 25882
T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z in microseconds


def tv(param_type: int, payload: bytes) -> bytes:
    return bytes([0x80 | param_type]) + payload


def tlv(param_type: int, payload: bytes) -> bytes:
    return struct.pack(">HH", param_type, 4 + len(payload)) + payload


def message(msg_type: int, msg_id: int, body: bytes) -> bytes:
    return struct.pack(">HII", (1 << 10) | msg_type, 10 + len(body), msg_id) + body


def tag_report(
    epc_hex: str | None,
    *,
    antenna: int | None = None,
    rssi: int | None = None,
    first_us: int | None = None,
    last_us: int | None = None,
    count: int | None = None,
    impinj_rssi_cdbm: int | None = None,
) -> bytes:
    body = b""
    if epc_hex is not None:
        epc = bytes.fromhex(epc_hex)
        if len(epc) == 12:
            body += tv(13, epc)
        else:
            body += tlv(241, struct.pack(">H", len(epc) * 8) + epc)
    if antenna is not None:
        body += tv(1, struct.pack(">H", antenna))
    if rssi is not None:
        body += tv(6, struct.pack(">b", rssi))
    if first_us is not None:
        body += tv(2, struct.pack(">Q", first_us))
    if last_us is not None:
        body += tv(4, struct.pack(">Q", last_us))
    if count is not None:
        body += tv(8, struct.pack(">H", count))
    if impinj_rssi_cdbm is not None:
        body += tlv(1023, struct.pack(">IIh", IMPINJ, 57, impinj_rssi_cdbm))
    return tlv(240, body)


def capture() -> bytes:
    """Three reports and a keepalive, as a reader would send them in one TCP stream."""
    return b"".join(
        [
            message(
                RO_ACCESS_REPORT,
                1,
                tag_report("3074257BF7194E4000001A85", antenna=1, rssi=-55,
                           first_us=T0, last_us=T0 + 250_000, count=3)
                + tag_report("3114257BF4499602D2000000", antenna=2, rssi=-61,
                             first_us=T0 + 10_000, last_us=T0 + 20_000, count=1),
            ),
            message(KEEPALIVE, 2, b""),
            message(
                RO_ACCESS_REPORT,
                3,
                tag_report("E2003411B802011820000D4E0000ABCD", antenna=4, rssi=-70,
                           last_us=T0 + 1_000_000, count=2, impinj_rssi_cdbm=-6925),
            ),
            message(RO_ACCESS_REPORT, 4, tag_report(None, antenna=1, rssi=-50)),
        ]
    )
