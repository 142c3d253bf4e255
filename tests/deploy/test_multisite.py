"""deploy/multisite: its units verify as installed and keep floorsync-server.service's hardening;
the NATS cluster configs are the bench's own (floorsync/bench/cluster.py) and nats-server accepts
them; each replica's environment file names only settings that exist."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from floorsync.bench.cluster import render_nats
from floorsync.server.settings import ENV_PREFIX, Settings

from .conftest import DEPLOY, require_tool
from .test_units import MAX_EXPOSURE, security, verify

MULTISITE = DEPLOY / "multisite"
UNITS = ("floorsync-central@.service", "floorsync-backup.service", "floorsync-backup.timer")


def _hardening(path: Path) -> list[str]:
    text = path.read_text()
    return text[text.index("# Hardening:"):].split("[Install]")[0].strip().splitlines()


@pytest.fixture
def multisite_root(host_root: Path) -> Path:
    for name in UNITS:
        shutil.copy2(MULTISITE / "systemd" / name, host_root / "etc/systemd/system" / name)
    return host_root


@pytest.mark.parametrize("name", ["floorsync-central@1.service", "floorsync-central@2.service",
                                  "floorsync-backup.service", "floorsync-backup.timer"])
def test_unit_verifies_as_installed(systemd_analyze: str, multisite_root: Path, name: str) -> None:
    done = verify(systemd_analyze, multisite_root, name)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


@pytest.mark.parametrize("name", ["floorsync-central@.service", "floorsync-backup.service"])
def test_unit_keeps_the_servers_hardening(systemd_analyze: str, name: str, tmp_path: Path
                                          ) -> None:
    assert _hardening(MULTISITE / "systemd" / name) == _hardening(
        DEPLOY / "systemd" / "floorsync-server.service")
    instance = tmp_path / name.replace("@.", "@1.")
    instance.write_text((MULTISITE / "systemd" / name).read_text())
    exposure, rating, report = security(systemd_analyze, instance.name, instance)
    assert exposure <= MAX_EXPOSURE and rating in {"OK", "SAFE"}, report


def test_nats_configs_are_the_benchs_and_nats_server_takes_them() -> None:
    for i in range(1, 4):
        path = MULTISITE / "nats" / f"nats-{i}.conf"
        peers = [f"nats{j}.floorsync.example:6222" for j in range(1, 4) if j != i]
        body = "\n".join(line for line in path.read_text().splitlines(keepends=False)
                         if not line.startswith("#")) + "\n"
        assert body == render_nats(f"floorsync-{i}", 4222, 1883, "/var/lib/nats/jetstream",
                                   6222, peers, host="0.0.0.0")
    nats = require_tool("nats-server", install="apt install nats-server")
    for i in range(1, 4):
        done = subprocess.run([nats, "-t", "-c", str(MULTISITE / "nats" / f"nats-{i}.conf")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stderr


def test_environment_files_name_only_settings_that_exist() -> None:
    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)} | {"PGPASSWORD"}
    files = sorted((MULTISITE / "env").glob("*.env"))
    assert [f.name for f in files] == ["backup.env", "central-1.env", "central-2.env"]
    ports = set()
    for path in files:
        names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", path.read_text(), re.MULTILINE)
        assert names and set(names) <= known, (path.name, set(names) - known)
        ports |= set(re.findall(r"^FLOORSYNC_HTTP_PORT=(\d+)$", path.read_text(), re.MULTILINE))
    assert len(ports) == 2, "each replica on a host listens on its own port"
