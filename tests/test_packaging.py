"""What ``pip install floorsync`` gives: one namespace in the wheel, and an edge host that runs
with the edge extra alone (a fresh virtual environment; the server's dependencies absent)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.edge.outbox import Outbox
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import central, wait_until
from tests.factories import events

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"
PACKAGES = ("edge", "server", "devices")
# Only what a source checkout holds: no build/ from an earlier build, no venv, no caches.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "*.db*")
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _run(*argv: str | Path, timeout: float = 600, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the source (symbolic links kept, as git checks them out)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", base / "dist", source)
    assert built.returncode == 0, built.stderr
    (found,) = (base / "dist").glob("floorsync-*.whl")
    return found


def test_the_wheel_holds_only_the_floorsync_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    tops = {n.split("/")[0] for n in names}
    assert tops == {"floorsync", f"{wheel.name.split('-py')[0]}.dist-info"}
    for module in ("floorsync/cli.py", "floorsync/edge/agent.py", "floorsync/edge/wire.py",
                   "floorsync/server/app.py", "floorsync/server/api/items.py",
                   "floorsync/devices/codes.py", "floorsync/devices/rfid/mqtt_reader.py",
                   "floorsync/bench/e2e.py", "floorsync/server/standards/EPCIS-JSON-Schema.json",
                   "floorsync/server/standards/epcis-context.jsonld",
                   *(f"floorsync/server/dashboard/static/{asset}" for asset in (
                       "index.html", "style.css", "app.js", "api.js", "live.js", "panels.js"))):
        assert module in names
    # every module of the source folders is in the wheel, under its installed name
    sources = [f"floorsync/{path.relative_to(ROOT).as_posix()}"
               for package in PACKAGES
               for path in (ROOT / package).rglob("*.py")]
    sources += [path.relative_to(ROOT).as_posix() for path in (ROOT / "floorsync").rglob("*.py")
                if path.relative_to(ROOT / "floorsync").parts[0] not in PACKAGES]
    assert len(sources) > 100
    assert [s for s in sources if s not in names] == []
    assert "floorsync = floorsync.cli:main" in entry_points


@pytest.fixture(scope="module")
def edge_host(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its edge extra, nothing else."""
    venv = tmp_path_factory.mktemp("edge-host") / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet",
                     f"{wheel}[edge]", timeout=900)
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.mark.slow
def test_the_edge_extra_brings_none_of_the_server_dependencies(edge_host: Path) -> None:
    for module in ("fastapi", "starlette", "uvicorn", "pydantic", "amqtt"):
        found = _run(edge_host / "python", "-c", f"import {module}")
        assert found.returncode == 1 and "ModuleNotFoundError" in found.stderr, module
    assert _run(edge_host / "python", "-c", "import paho.mqtt, serial, biip, epcpy").returncode == 0


@pytest.mark.slow
def test_an_edge_host_decodes_replays_and_reports_status(edge_host: Path, tmp_path: Path
                                                         ) -> None:
    floorsync = edge_host / "floorsync"
    decoded = _run(floorsync, "decode", "]C10109501101530003", "--json", timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    assert json.loads(decoded.stdout)["gtin"] == "09501101530003"

    replayed = _run(floorsync, "edge", "replay", EXAMPLES / "replay-door.jsonl", "--config",
                    EXAMPLES / "dock-door.toml", timeout=60, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert len([json.loads(line) for line in replayed.stdout.splitlines()]) == 4

    outbox = tmp_path / "outbox.db"
    with Outbox(outbox) as box:
        box.add(events(7))
    status = _run(floorsync, "edge", "status", "--outbox", outbox, "--json", timeout=60)
    assert status.returncode == 1, status.stderr  # 1: no agent running on this outbox
    assert json.loads(status.stdout)["agent"]["running"] is False

    server = _run(floorsync, "server", timeout=60)
    assert server.returncode == 2 and "floorsync[server]" in server.stderr


@pytest.fixture
def edge_process(edge_host: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_an_edge_host_runs_the_agent_and_syncs(
    edge_host: Path, edge_process: list[subprocess.Popen[bytes]], tmp_path: Path,
    mosquitto: Mosquitto, site: str,
) -> None:
    outbox = tmp_path / "edge-outbox.db"
    with Outbox(outbox) as box:
        box.add(events(50))
    with central(tmp_path / "central.db", mosquitto.url) as store:
        process = subprocess.Popen(
            [str(edge_host / "floorsync"), "edge", "--site", site, "--device", "edge-only",
             "--broker", mosquitto.url, "--outbox", str(outbox)],
            stderr=subprocess.PIPE, env=ENV, cwd=tmp_path,
        )
        edge_process.append(process)
        wait_until(lambda: store.summary()["events"] == 50 or process.poll() is not None,
                   60, "the edge host's agent to sync")
        applied = store.summary()["events"]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err.decode()
    assert applied == 50
