"""Every parser on random and mutated input: nothing escapes but a report, every read is sane.

Seeded (`random.Random`), so a failure is reproducible; a few thousand inputs per parser.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import MAX_ANTENNA, MAX_RAW, MAX_SEEN, Parsed, epc_problem
from floorsync.devices.rfid.impinj import parse_impinj
from floorsync.devices.rfid.lineformat import LineFormat
from floorsync.devices.rfid.replay import parse_replay_line
from floorsync.devices.rfid.zebra import parse_zebra

DATA = Path(__file__).parent / "data"
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

SEEDS = {
    "impinj": (DATA / "impinj_stream.jsonl").read_bytes(),
    "zebra": (DATA / "zebra_stream.json").read_bytes(),
    "replay": (DATA / "replay_dock1.jsonl").read_bytes(),
}


def sane(read: TagRead) -> None:
    assert epc_problem(read.epc) is None and read.epc == read.epc.upper()
    assert isinstance(read.antenna, int) and 0 <= read.antenna <= MAX_ANTENNA
    assert isinstance(read.seen, int) and 1 <= read.seen <= MAX_SEEN
    assert read.at.tzinfo is not None
    read.at.astimezone(UTC)  # representable
    assert read.rssi is None or read.rssi == read.rssi  # not NaN


def check(parsed: Parsed) -> None:
    for read in parsed.reads:
        sane(read)
    for error in parsed.errors:
        assert error.reason and isinstance(error.reason, str)
        assert len(error.raw) <= MAX_RAW


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            del out[pos : pos + rng.randint(1, 20)]
        elif op == 2:
            out[pos:pos] = rng.choice(
                [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\x00", b"\xff", b"9" * 30,
                 b"-1", b"1e999", b"NaN", b"null", b"true", b"[" * 3000, b"\xe2\x80"]
            )
        elif op == 3:
            out = out[:pos]  # truncation
        else:
            out[pos:pos] = out[: rng.randint(0, 40)]  # a duplicated piece
    return bytes(out)


def weird_value(rng: random.Random, depth: int = 0) -> object:
    choices: list[Callable[[], object]] = [
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice([0, 1, -1, 65535, 65536, 1.5, 1e300, -0.0, 10**30]),
        lambda: rng.choice(["", " ", "E280", "e2801160", "E28", "E2" * 70, "0" * 124, "0" * 128,
                            "2026-01-02T03:04:05Z", "0001-01-01T00:00:00+14:00", "1e3", "+7",
                            "\u0661", "NaN", "x" * 1000]),
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.uniform(-1e20, 1e20),
    ]
    if depth < 2:
        choices.append(lambda: [weird_value(rng, depth + 1) for _ in range(rng.randint(0, 3))])
        choices.append(lambda: {"k": weird_value(rng, depth + 1)})
    return rng.choice(choices)()


def impinj_like(rng: random.Random) -> bytes:
    tag = {k: weird_value(rng) for k in ("epcHex", "epc", "antennaPort", "peakRssiCdbm",
                                         "lastSeenTime") if rng.random() < 0.7}
    event = {"timestamp": weird_value(rng), "hostname": weird_value(rng),
             "tagInventoryEvent": tag}
    return json.dumps(event).encode()


def zebra_like(rng: random.Random) -> bytes:
    data = {k: weird_value(rng) for k in ("idHex", "antenna", "peakRssi", "reads", "MAC")
            if rng.random() < 0.7}
    return json.dumps({"type": "SIMPLE", "timestamp": weird_value(rng), "data": data}).encode()


def replay_like(rng: random.Random) -> bytes:
    record = {k: weird_value(rng) for k in ("t", "epc", "antenna", "rssi", "seen", "reader")
              if rng.random() < 0.8}
    return json.dumps(record).encode()


def inputs(rng: random.Random, seed: bytes, like: Callable[[random.Random], bytes]) -> list[bytes]:
    out = [rng.randbytes(rng.randint(0, 300)) for _ in range(300)]
    out += [mutate(rng, seed) for _ in range(1500)]
    out += [like(rng) for _ in range(1500)]
    out += [mutate(rng, like(rng)) for _ in range(500)]
    return out


@pytest.mark.parametrize(
    ("parser", "seed", "like"),
    [(parse_impinj, "impinj", impinj_like), (parse_zebra, "zebra", zebra_like)],
)
def test_json_parsers_never_raise(
    parser: Callable[[bytes], Parsed], seed: str, like: Callable[[random.Random], bytes]
) -> None:
    rng = random.Random(f"fuzz-{seed}")
    reads = errors = 0
    for data in inputs(rng, SEEDS[seed], like):
        parsed = parser(data)
        check(parsed)
        reads += len(parsed.reads)
        errors += len(parsed.errors)
    assert reads > 100 and errors > 1000  # the fuzzing reached both outcomes


def test_replay_lines_raise_only_value_error() -> None:
    rng = random.Random("fuzz-replay")
    good = 0
    for data in inputs(rng, SEEDS["replay"].splitlines()[0], replay_like):
        try:
            read = parse_replay_line(data, "replay", START)
        except ValueError as exc:
            assert str(exc)
            continue
        sane(read)
        good += 1
    assert good > 10


def test_line_formats_raise_only_value_error() -> None:
    rng = random.Random("fuzz-lines")
    formats = [
        LineFormat.template("{epc},{antenna},{rssi},{count}"),
        LineFormat.template("TAG:{epc} ANT={antenna} @{time}"),
    ]
    seeds = [b"3074257BF7194E4000001A85,1,-52.5,3", b"TAG:E2801160 ANT=3 @2026-01-02T03:04:05Z"]
    good = 0
    for fmt, seed in zip(formats, seeds, strict=True):
        lines = [rng.randbytes(rng.randint(0, 80)) for _ in range(500)]
        lines += [mutate(rng, seed) for _ in range(2000)]
        lines += [seed.replace(b"1", str(weird_value(rng)).encode()[:200]) for _ in range(500)]
        for line in lines:
            try:
                read = fmt.parse(line, "desk", at=START)
            except ValueError as exc:
                assert str(exc)
                continue
            sane(read)
            good += 1
    assert good > 100


def test_llrp_decoder_never_raises() -> None:
    pytest.importorskip("sllurp.llrp", reason="sllurp (optional GPL-3.0 extra) is not installed")
    from floorsync.devices.rfid.llrp import LlrpStreamDecoder, reads_from_tag_reports
    from tests.devices.rfid.llrp_bytes import capture

    rng = random.Random("fuzz-llrp")
    data = capture()
    reads = 0
    for n in range(1500):
        blob = mutate(rng, data) if n % 3 else rng.randbytes(rng.randint(0, 200))
        decoder = LlrpStreamDecoder("d")
        pos = 0
        while pos < len(blob):
            step = rng.randint(1, 64)
            parsed = decoder.feed(blob[pos : pos + step])
            check(parsed)
            reads += len(parsed.reads)
            pos += step
        check(decoder.finish())
    assert reads > 100
    for _ in range(1000):
        tag = {k: weird_value(rng) for k in ("EPC", "EPC-96", "AntennaID", "PeakRSSI",
                                             "ImpinjPeakRSSI", "LastSeenTimestampUTC",
                                             "FirstSeenTimestampUTC", "TagSeenCount")
               if rng.random() < 0.6}
        check(reads_from_tag_reports("d", [tag, weird_value(rng)]))  # type: ignore[list-item]
