"""`floorsync edge replay`: recorded input through the floor logic, no devices, no broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from floorsync.edge import wire

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
START = "2026-11-22T08:00:00+01:00"


def replay(file: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "replay", str(file), "--config", str(config),
         "--start", START], capture_output=True, text=True, timeout=60,
    )


def events(result: subprocess.CompletedProcess[str]) -> list[wire.Event]:
    return [wire.event_from_dict(json.loads(line)) for line in result.stdout.splitlines()]


def test_the_handheld_example_replays_to_the_expected_events() -> None:
    result = replay(EXAMPLES / "replay-handheld.jsonl", EXAMPLES / "handheld.toml")
    assert result.returncode == 0, result.stderr
    got = [(e.type, e.qty, e.from_, e.to) for e in events(result)]
    assert got == [
        ("receive", 12, None, "DOCK-1"),  # AI 30 on the label
        ("receive", 1, None, "DOCK-1"),
        ("putaway", 2, "DOCK-1", "A-01-02"),  # the third scan fell in the duplicate window
        ("count", 0, None, None),
    ]
    count = events(result)[-1].count
    assert count is not None and count.location == "A-01-02"
    assert [(line.item.gtin, line.qty) for line in count.seen] == [("09501101530003", 2)]
    assert "bad read on hh-07" in result.stderr  # the garbled label at the end
    assert [e.seq for e in events(result)] == [1, 2, 3, 4]


def test_the_door_example_replays_to_one_receive_per_case() -> None:
    result = replay(EXAMPLES / "replay-door.jsonl", EXAMPLES / "dock-door.toml")
    assert result.returncode == 0, result.stderr
    got = events(result)
    assert {e.type for e in got} == {"receive"}
    assert sorted(e.item.serial for e in got if e.item) == ["1000", "1001", "1002", "1003"]
    assert all(e.read and e.read.reads == 12 and e.to == "DOCK-1" for e in got)


def test_the_same_recording_gives_the_same_events(tmp_path: Path) -> None:
    def shape(result: subprocess.CompletedProcess[str]) -> list[tuple[object, ...]]:
        return [(e.seq, e.time, e.type, e.item, e.qty, e.from_, e.to, e.read)
                for e in events(result)]

    first = replay(EXAMPLES / "replay-door.jsonl", EXAMPLES / "dock-door.toml")
    second = replay(EXAMPLES / "replay-door.jsonl", EXAMPLES / "dock-door.toml")
    assert shape(first) == shape(second) and shape(first)


def test_unreadable_lines_are_reported_and_the_replay_goes_on(tmp_path: Path) -> None:
    good = (EXAMPLES / "replay-handheld.jsonl").read_text().splitlines()
    bad = ["not json", '{"t": -1, "device": "hh-07", "code": "x"}', '["a list"]',
           '{"t": 1, "reader": "door-99", "epc": "AA", "antenna": 1}',
           '{"t": 1, "device": "hh-07", "code": 42}', '{"t": 2}']
    recording = tmp_path / "mixed.jsonl"
    recording.write_text("\n".join(good[:3] + bad + good[3:]) + "\n")
    result = replay(recording, EXAMPLES / "handheld.toml")
    assert result.returncode == 1
    assert len(events(result)) == 4  # the good lines still give every event
    for number in range(4, 10):
        assert f"mixed.jsonl:{number}: skipped" in result.stderr


def test_replay_needs_its_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "floorsync", "edge", "replay", str(tmp_path / "none.jsonl"),
         "--config", str(tmp_path / "missing.toml")], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "cannot read config" in result.stderr


def test_gpi_lines_open_and_close_door_cycles(tmp_path: Path) -> None:
    from floorsync.devices.sim import sgtin96_hex

    config = tmp_path / "door.toml"
    config.write_text(
        'site = "wh1"\ndevice = "door-07"\n[outbox]\npath = "unused.db"\n'
        '[[portals]]\nname = "door-07"\nlocation = "DOCK-7"\nreader = "sim"\ngpi = 1\n'
        'stable_s = 0.5\nantennas = { "1" = "outside", "2" = "inside" }\n'
    )
    inside_cycle = sgtin96_hex("0614141", "812345", 1)
    before_cycle = sgtin96_hex("0614141", "812345", 2)
    # a full pass (outside, then inside) while the photo-eye is dark: ignored in GPI mode
    lines = [{"t": 0.2 + 0.05 * i, "reader": "door-07", "antenna": 1 if i < 3 else 2,
              "epc": before_cycle, "rssi": -50.0} for i in range(6)]
    lines.append({"t": 1.0, "reader": "door-07", "gpi": 1, "state": True})
    for i in range(10):
        lines.append({"t": 1.1 + 0.05 * i, "reader": "door-07", "antenna": 1 if i < 5 else 2,
                      "epc": inside_cycle, "rssi": -50.0})
    lines.append({"t": 2.0, "reader": "door-07", "gpi": 1, "state": False})
    lines.append({"t": 4.0, "reader": "door-07", "gpi": 1, "state": False})
    recording = tmp_path / "gpi.jsonl"
    recording.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = replay(recording, config)
    assert result.returncode == 0, result.stderr
    got = events(result)
    assert [(e.type, e.to, e.item.serial if e.item else None) for e in got] == [
        ("receive", "DOCK-7", "1")]


def test_replayed_times_carry_the_offset_given_with_start() -> None:
    """The recording's site, not the replaying host: --start's +01:00 on every event time."""
    for file, config in (("replay-handheld.jsonl", "handheld.toml"),
                         ("replay-door.jsonl", "dock-door.toml")):
        got = events(replay(EXAMPLES / file, EXAMPLES / config))
        assert got
        for e in got:
            assert e.time.startswith("2026-11-22T08:") and e.time.endswith("+01:00"), e.time
            if e.read and e.read.first:
                assert e.read.first.endswith("+01:00") and (e.read.last or "").endswith("+01:00")
