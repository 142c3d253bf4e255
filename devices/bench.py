"""Throughput of the device-side hot paths on this host: framing, interpretation, wedge decoding.

    python -m floorsync.devices.bench [SECONDS]

`run` splits `seconds` between the measurements and returns rates per second:
- `framing_frames_per_s`: CR-terminated GS1-128 scans (AIM id, GS inside) through
  `FrameDecoder`, fed as 4 KiB chunks like serial reads;
- `interpret_codes_per_s`: `interpret` over a mix of GS1-128 item labels, EAN-13 (with and
  without AIM id), SSCC pallet labels, GS1 414/254 and site location labels, command labels;
  `interpret_biip_codes_per_s` is the same mix through biip alone (`fast=False`);
- `interpret_epc_per_s`: `interpret_epc` over SGTIN-96, SSCC-96 and SGLN-96 EPCs;
- `wedge_key_events_per_s`: EV_KEY events through `devices.keymap.KeyDecoder` (the same GS1
  scans typed on a `us` layout, GS as Ctrl+]), or None when devices.keymap is missing or its
  interface differs from the one this bench knows.
No speed is asserted anywhere: the numbers are for capacity planning and regressions by eye.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from floorsync.devices.codes import interpret, interpret_epc
from floorsync.devices.framing import FrameDecoder
from floorsync.devices.sim import gs1_label, sgtin96_hex, sscc96_hex

GS = "\x1d"
CHUNK = 4096


def _with_check(payload: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return payload + str((10 - total % 10) % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def gs1_scans(n: int, seed: int = 1) -> list[str]:
    """GS1-128 item scans as a serial scanner sends them ("]C1" included)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        gtin = _with_check("0" + _digits(rng, 12))
        expiry = date(2026, 1, 1) + timedelta(days=rng.randrange(900))
        lot = f"L{_digits(rng, rng.randint(3, 8))}"
        serial = _digits(rng, rng.randint(4, 12)) if rng.random() < 0.5 else None
        qty = rng.randint(1, 500) if rng.random() < 0.3 else None
        out.append(gs1_label(gtin, lot=lot, serial=serial, qty=qty, expiry=expiry))
    return out


def code_mix(n: int = 200, seed: int = 2) -> list[tuple[str, str | None]]:
    """(text, symbology) pairs: half GS1-128 items, the rest EAN-13, SSCC, locations, commands."""
    rng = random.Random(seed)
    out: list[tuple[str, str | None]] = []
    for scan in gs1_scans(n // 2, seed):
        out.append((scan[3:], scan[:3]))
    while len(out) < n:
        pick = rng.randrange(6)
        if pick == 0:
            out.append((_with_check(_digits(rng, 12)), "]E0"))
        elif pick == 1:
            out.append((_with_check(_digits(rng, 12)), None))
        elif pick == 2:
            sscc = _with_check(_digits(rng, 17))
            content = _with_check("0" + _digits(rng, 12))
            out.append((f"00{sscc}{GS}02{content}{GS}37{rng.randint(1, 99)}", "]C1"))
        elif pick == 3:
            gln = _with_check(_digits(rng, 12))
            out.append((f"414{gln}254{rng.randint(1, 999)}", "]C1"))
        elif pick == 4:
            out.append((f"LOC:A-{rng.randint(1, 40):02d}-{rng.randint(1, 9):02d}", None))
        else:
            out.append((rng.choice(["CMD:RECEIVE", "CMD:PICK", "CMD:DONE"]), None))
    rng.shuffle(out)
    return out


def epc_mix(n: int = 60, seed: int = 3) -> list[str]:
    """SGTIN-96, SSCC-96 and SGLN-96 EPCs as hex."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(sscc96_hex("0614141", f"{rng.randrange(10**10):010d}"))
        elif i % 3 == 1:
            out.append(sgtin96_hex("0614141", f"{rng.randrange(10**6):06d}", rng.randrange(10**9)))
        else:
            out.append("3214257BF460720000000190")  # SGLN-96 (0614141.12345.400)
    return out


def _rate(work: Callable[[], int], seconds: float) -> float:
    """Run `work` (returns items done) until `seconds` have passed, at least once; items/s."""
    done = 0
    start = time.perf_counter()
    while True:
        done += work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed if elapsed > 0 else float(done)


def bench_framing(seconds: float) -> float:
    stream = b"".join(s.encode() + b"\r" for s in gs1_scans(2000))
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]

    def work() -> int:
        decoder = FrameDecoder(suffix=b"\r")
        frames = 0
        for chunk in chunks:
            frames += len(decoder.feed(chunk))
        return frames

    return _rate(work, seconds)


def bench_interpret(seconds: float, fast: bool = True) -> float:
    mix = code_mix()

    def work() -> int:
        for text, symbology in mix:
            interpret(text, symbology, fast=fast)
        return len(mix)

    return _rate(work, seconds)


def bench_epc(seconds: float) -> float:
    mix = epc_mix()

    def work() -> int:
        for hex_epc in mix:
            interpret_epc(hex_epc)
        return len(mix)

    return _rate(work, seconds)


def _wedge_events(keymap: Any, scans: Sequence[str]) -> list[tuple[int, int, int, float]]:
    timed = []
    t = 0.0
    for scan in scans:
        for event_type, code, value in keymap.text_to_keys(scan, "us"):
            timed.append((event_type, code, value, t))
            t += 0.0005
        t += 0.5
    return timed


def bench_wedge(seconds: float) -> float | None:
    """EV_KEY events/s through devices.keymap.KeyDecoder, or None when it is not there (yet)."""
    try:
        keymap = importlib.import_module("floorsync.devices.keymap")
        events = _wedge_events(keymap, gs1_scans(200, seed=4))
        keys = sum(1 for e in events if e[0] == keymap.EV_KEY)
        decoder_class = keymap.KeyDecoder
        decoder_class("us").feed(*events[0])  # the interface this bench expects
    except Exception:  # absent, half-written or changed: no number rather than a wrong one
        return None

    def work() -> int:
        decoder = decoder_class("us")
        feed = decoder.feed
        for event_type, code, value, at in events:
            feed(event_type, code, value, at)
        return keys

    try:
        return _rate(work, seconds)
    except Exception:
        return None


def run(seconds: float = 1.0) -> dict[str, float | None]:
    """Measure every path for about `seconds` in all; rates per second (None: not available)."""
    share = max(seconds, 0.0) / 5
    return {
        "framing_frames_per_s": bench_framing(share),
        "interpret_codes_per_s": bench_interpret(share),
        "interpret_biip_codes_per_s": bench_interpret(share, fast=False),
        "interpret_epc_per_s": bench_epc(share),
        "wedge_key_events_per_s": bench_wedge(share),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 5.0
    result = run(seconds)
    print(json.dumps({k: (round(v) if v is not None else None) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
