"""ReplayReader (recorded JSON lines) and PortalSimulator (the scripted dock door)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import TagReader
from floorsync.devices.rfid.replay import PortalSimulator, ReplayReader
from floorsync.devices.sim import ScriptedPortal, sgtin96_hex

DATA = Path(__file__).parent / "data"
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run_until_done(
    reader: ReplayReader | PortalSimulator, timeout: float = 10.0
) -> tuple[list[TagRead], list[bool]]:
    reads: list[TagRead] = []
    states: list[bool] = []
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(reads.append, stop, states.append))
    thread.start()
    try:
        assert reader.done.wait(timeout)
        assert thread.is_alive()  # after the end, it idles until stop
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    return reads, states


def test_fast_replay_with_bad_lines_reported() -> None:
    errors: list[tuple[str, bytes]] = []
    reader = ReplayReader(DATA / "replay_dock1.jsonl", name="replay", realtime=False,
                          start=START, on_error=lambda r, raw: errors.append((r, raw)))
    assert isinstance(reader, TagReader)
    reads, states = run_until_done(reader)
    assert states == [True]
    assert [(r.reader, r.epc, r.antenna, r.rssi, r.seen) for r in reads] == [
        ("dock-1", "3074257BF7194E4000001A85", 1, -52.5, 1),
        ("dock-1", "3074257BF7194E4000001A85", 2, -60.0, 1),
        ("replay", "3114257BF4499602D2000000", 1, -48.0, 3),
        ("dock-1", "3114257BF4499602D2000000", 2, None, 1),
    ]
    assert [r.at for r in reads] == [START + timedelta(seconds=t) for t in (0, 0.05, 0.1, 0.3)]
    assert [reason.split(":")[0] for reason, _ in errors] == ["line 5", "line 6", "line 7"]
    assert "not hex" in errors[0][0] and "'epc'" in errors[1][0] and "JSON" in errors[2][0]


def test_paced_replay_takes_the_recorded_time() -> None:
    reader = ReplayReader(DATA / "replay_dock1.jsonl", name="replay", speed=1.0)
    began = time.monotonic()
    reads, _ = run_until_done(reader)
    assert time.monotonic() - began >= 0.3
    assert len(reads) == 4


def test_missing_file_is_offline(tmp_path: Path) -> None:
    states: list[bool] = []
    stop = threading.Event()
    reader = ReplayReader(tmp_path / "nope.jsonl", name="replay")
    thread = threading.Thread(target=reader.run, args=(print, stop, states.append))
    thread.start()
    threading.Timer(0.3, stop.set).start()
    thread.join(timeout=5)
    assert not thread.is_alive() and states == [False]


def test_portal_simulator_streams_pallet_passes() -> None:
    tags = [sgtin96_hex("0614141", "812345", n) for n in range(1, 4)]
    simulator = PortalSimulator(ScriptedPortal("dock-7", rng_seed=42), [tags, tags[:1]],
                                realtime=False)
    reads, states = run_until_done(simulator)
    assert states == [True]
    assert {r.epc for r in reads} == set(tags)
    assert {r.antenna for r in reads} == {1, 2}
    assert all(r.reader == "dock-7" and r.at.tzinfo is not None for r in reads)
    assert len(reads) > len(tags) * 2  # tags are read over and over


def test_portal_simulator_paced_respects_stop() -> None:
    tags = [sgtin96_hex("0614141", "812345", 1)]
    simulator = PortalSimulator(ScriptedPortal("dock-7", rng_seed=1), [tags] * 100)
    reads: list[TagRead] = []
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, args=(reads.append, stop))
    thread.start()
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and not simulator.done.is_set()
