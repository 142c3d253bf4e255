"""Simulated devices for tests and the demo, driving the real code paths.

A scripted scanner writes into the master side of a pseudo-terminal, and a real pyserial
`SerialScanner` reads the slave side; closing the master looks to pyserial like an unplug.
RFID portals produce seeded, realistic tag-read streams.
"""

from __future__ import annotations

import os
import random
import tty
from datetime import date, datetime, timedelta

from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue
from epcpy.epc_schemes.sscc import SSCC, SSCCFilterValue

from floorsync.devices.base import TagRead

GS = "\x1d"


def open_pty() -> tuple[int, str]:
    """Open a pseudo-terminal: (master fd, slave path), the slave raw so CR is not translated.

    The slave fd is closed here; the terminal stays alive while the master is open.
    """
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        path = os.ttyname(slave)
    finally:
        os.close(slave)
    return master, path


class ScriptedScanner:
    """The device side of a pty: types codes the way a serial scanner sends them."""

    def __init__(self, master_fd: int, suffix: bytes = b"\r", prefix: bytes = b"") -> None:
        self.master_fd = master_fd
        self.suffix = suffix
        self.prefix = prefix
        self.closed = False

    def type(self, code: str) -> None:
        """Send one code: prefix, UTF-8 text (AIM id included if the caller put it), suffix."""
        self.send(self.prefix + code.encode("utf-8") + self.suffix)

    def send(self, data: bytes) -> None:
        """Send raw bytes (split codes, garbage, invalid UTF-8)."""
        view = memoryview(data)
        while view:
            written = os.write(self.master_fd, view)
            view = view[written:]

    def read_host(self, size: int = 1024) -> bytes:
        """Read what the host sent to the scanner (feedback bytes, trigger commands)."""
        return os.read(self.master_fd, size)

    def unplug(self) -> None:
        """Close the master: the host side then sees what an unplugged scanner looks like."""
        if not self.closed:
            self.closed = True
            os.close(self.master_fd)


def gs1_label(
    gtin: str,
    lot: str | None = None,
    serial: str | None = None,
    qty: int | None = None,
    expiry: date | None = None,
) -> str:
    """A GS1-128 scan as a scanner sends it: "]C1", element string, GS after variable fields."""
    parts: list[tuple[str, bool]] = [("01" + gtin.zfill(14), False)]
    if expiry is not None:
        parts.append(("17" + expiry.strftime("%y%m%d"), False))
    if lot is not None:
        parts.append(("10" + lot, True))
    if serial is not None:
        parts.append(("21" + serial, True))
    if qty is not None:
        parts.append(("30" + str(qty), True))
    out = "]C1"
    for i, (element, variable) in enumerate(parts):
        out += element
        if variable and i < len(parts) - 1:
            out += GS
    return out


def sgtin96_hex(company_prefix: str, item_ref: str, serial: int, filter_value: int = 1) -> str:
    """The SGTIN-96 EPC (hex) a tag would carry; `item_ref` includes the indicator digit."""
    sgtin = SGTIN(f"urn:epc:id:sgtin:{company_prefix}.{item_ref}.{serial}")
    return sgtin.hex(
        binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
        filter_value=SGTINFilterValue(str(filter_value)),
    )


def sscc96_hex(company_prefix: str, serial_ref: str, filter_value: int = 2) -> str:
    """The SSCC-96 EPC (hex) of a pallet tag; `serial_ref` includes the extension digit."""
    sscc = SSCC(f"urn:epc:id:sscc:{company_prefix}.{serial_ref}")
    return sscc.hex(
        binary_coding_scheme=SSCC.BinaryCodingScheme.SSCC_96,
        filter_value=SSCCFilterValue(str(filter_value)),
    )


class ScriptedPortal:
    """A fixed RFID reader at a dock door, producing seeded, realistic read streams."""

    def __init__(self, reader: str, rng_seed: int | None = None) -> None:
        self.reader = reader
        self.rng = random.Random(rng_seed)

    def pallet_pass(
        self,
        tags: list[str],
        start: datetime,
        antennas: tuple[int, ...] = (1, 2),
        reads_per_tag: tuple[int, int] = (5, 20),
    ) -> list[TagRead]:
        """Reads of a pallet moving through the door, sorted by time.

        Each tag is read repeatedly on every antenna over 1-2 s; the first antenna (outside)
        sees it earlier than the last (inside), so direction can be told. RSSI around -50..-70.
        """
        rng = self.rng
        reads: list[TagRead] = []
        count = len(antennas)
        for tag in tags:
            t0 = rng.uniform(0.0, 0.4)
            duration = rng.uniform(1.0, 2.0)
            for i, antenna in enumerate(antennas):
                shift = duration * 0.25 * (i / (count - 1) if count > 1 else 0.0)
                base_rssi = rng.uniform(-70.0, -50.0)
                for _ in range(rng.randint(*reads_per_tag)):
                    offset = t0 + shift + rng.uniform(0.0, duration * 0.75)
                    rssi = max(-85.0, min(-35.0, rng.gauss(base_rssi, 2.0)))
                    reads.append(
                        TagRead(
                            reader=self.reader,
                            epc=tag.upper(),
                            antenna=antenna,
                            rssi=round(rssi * 2) / 2,
                            at=start + timedelta(seconds=offset),
                        )
                    )
        reads.sort(key=lambda r: (r.at, r.epc, r.antenna))
        return reads
