"""Coverage-guided fuzzing (atheris, libFuzzer) of every input path: ``make fuzz`` runs each.

    python -m tests.fuzz.atheris_targets TARGET [libFuzzer options, e.g. -max_total_time=60]

One target per input path, each the same boundary as its hypothesis test in this folder:
anything but the path's documented error is a crash, and a rejected input must say why. Not a
test module (pytest never collects it: see conftest.py); ``main`` needs the ``fuzz`` extra, the
rest does not: tests/fuzz/test_atheris_targets.py imports it without atheris and runs every
target on its seeds in CI (``prepare`` first, as ``main`` does).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _framing(data: bytes) -> None:
    from floorsync.devices.framing import FrameDecoder, to_scan_read

    if not data:
        return
    config, stream = data[0], data[1:]
    suffix = [b"\r", b"\n", b"\r\n", b"\t", b"", b"END"][config % 6]
    decoder = FrameDecoder(suffix=suffix, prefix=b"]" if config & 8 else b"",
                           stx_etx=bool(config & 16), max_length=1 + (config >> 5) * 8)
    step = 1 + (config % 7)
    frames = []
    for i in range(0, len(stream), step):
        frames += decoder.feed(stream[i : i + step])
    last = decoder.flush()
    frames += [last] if last is not None else []
    for frame in frames:
        assert len(frame.data) <= decoder.max_length
        assert frame.error is None or frame.error.strip()
        to_scan_read("fuzz", frame, at=START)


def _wedge(data: bytes) -> None:
    import struct

    from floorsync.devices.keymap import LAYOUTS, KeyDecoder

    if not data:
        return
    layout = sorted(LAYOUTS)[data[0] % len(LAYOUTS)]
    decoder = KeyDecoder(layout, terminators=("enter", "tab") if data[0] & 4 else ())
    body = data[1:]
    events = [struct.unpack_from(_KEY_EVENT, body, i) for i in range(0, len(body) - 8, 9)]
    for code in decoder.feed_events(events):
        assert code.error is None or code.error.strip()
    decoder.flush(0.0)


_KEY_EVENT = "<BHhf"  # the wedge target's input: a layout byte, then (type, code, value, time)


def _keys(config: int, *codes: int) -> bytes:
    """A wedge seed: each evdev key code pressed and released (EV_KEY 1), 10 ms apart."""
    import struct

    events = [(1, code, value) for code in codes for value in (1, 0)]
    return bytes([config]) + b"".join(struct.pack(_KEY_EVENT, *event, 0.01 * i)
                                      for i, event in enumerate(events))


def _codes(data: bytes) -> None:
    from floorsync.devices import gs1fast
    from floorsync.devices.codes import interpret, interpret_epc

    text = data.decode("utf-8", "replace")
    for symbology in (None, "]C1", "]d2", "]Q3", "]E0"):
        identity = interpret(text, symbology)
        assert identity.kind != "unknown" or identity.error
        gs1fast.parse(text, symbology, assume_gs1=True)
    identity = interpret_epc(text)
    assert identity.kind != "unknown" or identity.error


def _epcmatch(data: bytes) -> None:
    from floorsync.edge.epcmatch import EpcFilter, parse_pattern

    text = data.decode("utf-8", "replace")
    pattern_text, _, epc = text.partition("\n")
    try:
        pattern = parse_pattern(pattern_text)
    except ValueError as exc:
        assert str(exc).strip()
        return
    EpcFilter(include=(pattern,)).accepts(epc.upper(), epc)


def _vendor_json(data: bytes) -> None:
    from floorsync.devices.rfid.impinj import parse_impinj
    from floorsync.devices.rfid.zebra import parse_zebra

    for parser in (parse_impinj, parse_zebra):
        parsed = parser(data)
        for error in parsed.errors:
            assert error.reason.strip()
    assert _LINE is not None
    for line in data.splitlines()[:20]:
        try:
            _LINE.parse(line, "desk", at=START)
        except ValueError as exc:
            assert str(exc).strip()


def _wire(data: bytes) -> None:
    from floorsync.edge import expected, wire

    for decode in (wire.decode_batch, wire.decode_ack, wire.decode_status,
                   expected.decode_expected):
        try:
            result = decode(data)
        except wire.WireError as exc:
            assert str(exc).strip()
            continue
        if isinstance(result, wire.Batch):
            assert all(bad.reason.strip() for bad in result.invalid)
            again = wire.decode_batch(wire.encode_batch(result))
            assert again.events == result.events
    wire.salvage_ids(data)
    text = data.decode("utf-8", "replace")
    for parse in (wire.parse_topic, expected.parse_docs_topic):
        try:
            parse(text)
        except wire.WireError as exc:
            assert str(exc).strip()


def _replay(data: bytes) -> None:
    from floorsync.devices.rfid.replay import parse_replay_line
    from floorsync.edge.replay import replay

    for line in data.splitlines()[:50]:
        try:
            parse_replay_line(line, "replay", START)
        except ValueError as exc:
            assert str(exc).strip()
    path = Path(_TMP) / "rec.jsonl"
    path.write_bytes(data)
    errors = io.StringIO()
    replay(path, _edge_config(), io.StringIO(), errors, START)


def _config(data: bytes) -> None:
    from floorsync.edge.config import load
    from floorsync.edge.errors import ConfigError

    path = Path(_TMP) / "edge.toml"
    path.write_bytes(data)
    try:
        load(path)
    except ConfigError as exc:
        assert str(exc).strip()


def _settings(data: bytes) -> None:
    from unittest import mock

    from floorsync.server.errors import ConfigError
    from floorsync.server.settings import ENV_PREFIX, Settings

    names = [f.upper() for f in Settings.__dataclass_fields__]
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for i, value in enumerate(data.decode("utf-8", "replace").replace("\x00", "").split("\n")):
        env[ENV_PREFIX + names[i % len(names)]] = value
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            Settings.from_env()
        except ConfigError as exc:
            assert str(exc).strip()


_TMP = tempfile.mkdtemp(prefix="floorsync-fuzz-")
_LINE_TEMPLATE = "{epc},{antenna},{rssi},{count},{time}"
_LINE: Any = None  # made in main, after atheris instruments the imports
_EDGE: Any = None


def _edge_config() -> Any:
    global _EDGE
    if _EDGE is None:
        from floorsync.edge.config import load

        path = Path(_TMP) / "door.toml"
        path.write_text('site = "wh1"\ndevice = "door-01"\n[[scanners]]\nname = "hh-07"\n'
                        'port = "/dev/null"\n[[portals]]\nname = "door-01"\n'
                        'location = "DOCK-1"\nreader = "replay"\n'
                        'antennas = { "1" = "outside", "2" = "inside" }\n')
        _EDGE = load(path)
    return _EDGE


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framing": _framing,
    "wedge": _wedge,
    "codes": _codes,
    "epcmatch": _epcmatch,
    "vendor-json": _vendor_json,
    "wire": _wire,
    "replay": _replay,
    "config": _config,
    "settings": _settings,
}

SEEDS: dict[str, list[bytes]] = {
    # "us" (sorted(LAYOUTS)[3]) with terminators (4): 1 2 3 Enter
    "wedge": [_keys(3 | 4, 2, 3, 4, 28)],
    "framing": [b"\x00]C1010950110153000310L1\x1d3012\r", b"\x10\x02ABC\x03"],
    "codes": [b"010950110153000310L1\x1d3012", b"3074257BF7194E4000001A85",
              b"https://id.gs1.org/01/09501101530003/10/L1"],
    "epcmatch": [b"urn:epc:idpat:sgtin:0614141.*\n3074257BF7194E4000001A85"],
    "vendor-json": [b'{"timestamp":"2021-07-09T23:35:59.278427551Z","tagInventoryEvent":'
                    b'{"epcHex":"E2801190A5021F80055817CA","antennaPort":1,"peakRssiCdbm":-2650}}',
                    b'{"type":"SIMPLE","timestamp":"2025-05-09T15:04:12.310+0000","data":'
                    b'{"idHex":"E28011606000020A1B2C3D4E","antenna":1,"peakRssi":-61,"reads":2}}'],
    "wire": [b'{"v":1,"site":"wh1","device":"hh-07","sent_at":"2026-01-02T03:04:05Z","events":'
             b'[{"id":"0190a0b0-0000-7000-8000-000000000000","seq":1,'
             b'"time":"2026-01-02T03:04:05+01:00","type":"receive","item":{"gtin":'
             b'"09501101530003"},"qty":1,"to":"DOCK-1"}]}',
             b'{"v":1,"device":"hh-07","results":[{"id":"x","status":"applied"}]}'],
    "replay": [b'{"t": 1.0, "reader": "door-01", "antenna": 1, "epc": "3034257BF7194E40000003E8",'
               b' "rssi": -55.0}\n{"t": 0.5, "device": "hh-07", "code": "CMD:RECEIVE"}\n'],
    "config": [b'site = "wh1"\ndevice = "hh-07"\n[sync]\nbroker = "mqtt://h:1883"\n'
               b'[[scanners]]\nname = "hh-07"\nport = "/dev/null"\n'],
    "settings": [b"mqtt://127.0.0.1:1883\n5\n"],
}


def prepare() -> None:
    """What the targets need once their modules are imported (instrumented, under atheris)."""
    global _LINE
    from floorsync.devices.rfid.lineformat import LineFormat

    _LINE = LineFormat.template(_LINE_TEMPLATE)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer options]; targets: {', '.join(TARGETS)}")
    import atheris

    name = argv[1]
    corpus = Path(os.environ.get("FUZZ_CORPUS", Path(_TMP) / "corpus")) / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS.get(name, [])):
        (corpus / f"seed-{i}").write_bytes(seed)
    with atheris.instrument_imports():
        import floorsync.devices.codes
        import floorsync.devices.framing
        import floorsync.devices.gs1fast
        import floorsync.devices.keymap
        import floorsync.devices.rfid.impinj
        import floorsync.devices.rfid.lineformat
        import floorsync.devices.rfid.replay
        import floorsync.devices.rfid.zebra
        import floorsync.edge.config
        import floorsync.edge.epcmatch
        import floorsync.edge.expected
        import floorsync.edge.replay
        import floorsync.edge.wire
        import floorsync.server.settings  # noqa: F401  (imported to be instrumented)
    prepare()
    target = TARGETS[name]
    options = argv[2:]
    if not any(o.startswith("-artifact_prefix=") for o in options):  # crashes: not in the tree
        artifacts = Path(os.environ.get("FUZZ_ARTIFACTS", Path(_TMP) / "artifacts")) / name
        artifacts.mkdir(parents=True, exist_ok=True)
        options.append(f"-artifact_prefix={artifacts}/")
    atheris.Setup([argv[0], *options, str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
