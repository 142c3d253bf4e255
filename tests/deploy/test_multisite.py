"""deploy/multisite: its units verify as installed and keep floorsync-server.service's hardening;
the NATS cluster configs are the bench's own (floorsync/bench/cluster.py) and nats-server accepts
them; each replica's environment file names only settings that exist."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from floorsync.bench.cluster import NatsSecurity, render_nats
from floorsync.server.settings import ENV_PREFIX, Settings
from tests.security.pki import TestCA

from .conftest import DEPLOY, require_tool
from .test_units import MAX_EXPOSURE, security, verify

MULTISITE = DEPLOY / "multisite"
UNITS = ("floorsync-central@.service", "floorsync-backup.service", "floorsync-backup.timer")
# Where a node keeps its files (deploy/multisite/README.md): its certificate for the client
# port, MQTT and the routes, the site CA, and the users file (relative to /etc/nats-server.conf)
PRODUCTION = NatsSecurity(cert_file="/etc/nats/tls/nats.crt", key_file="/etc/nats/tls/nats.key",
                          ca_file="/etc/nats/tls/ca.crt", users="nats/floorsync-users.conf")


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


def _settings(text: str) -> str:
    """A NATS configuration without its comments (any indentation)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))


def test_nats_configs_are_the_benchs_hardened_and_nats_server_takes_them(tmp_path: Path
                                                                          ) -> None:
    """The bench's render_nats with the production security: TLS on the client port, the MQTT
    listener and the routes (verified, known hosts only), the users file included; nats-server
    -t takes each with the shipped users file beside it and real certificate files where the
    paths point (-t loads them): only those paths are moved."""
    for i in range(1, 4):
        path = MULTISITE / "nats" / f"nats-{i}.conf"
        peers = [f"nats{j}.floorsync.example:6222" for j in range(1, 4) if j != i]
        assert _settings(path.read_text()) == _settings(render_nats(
            f"floorsync-{i}", 4222, 8883, "/var/lib/nats/jetstream", 6222, peers,
            host="0.0.0.0", security=replace(PRODUCTION, advertise=f"nats{i}.floorsync.example")))
    ca = TestCA.create(tmp_path / "tls")
    server = ca.server("nats")
    (tmp_path / "nats").mkdir()
    shutil.copyfile(MULTISITE / "nats" / "floorsync-users.conf",
                    tmp_path / "nats" / "floorsync-users.conf")
    nats = require_tool("nats-server", install="apt install nats-server")
    for i in range(1, 4):
        text = (MULTISITE / "nats" / f"nats-{i}.conf").read_text()
        for old, new in ((PRODUCTION.cert_file, server.cert), (PRODUCTION.key_file, server.key),
                         (PRODUCTION.ca_file, ca.cert)):
            assert text.count(f'"{old}"') == 3  # client port, MQTT, routes
            text = text.replace(f'"{old}"', f'"{new}"')
        config = tmp_path / "nats-server.conf"  # where Debian's unit reads it, beside nats/
        config.write_text(text)
        done = subprocess.run([nats, "-t", "-c", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stderr


def test_the_bench_itself_stays_plain() -> None:
    plain = render_nats("fs-1", 4222, 1883, "/tmp/js", 6222, ["h:6222"])
    assert "tls" not in plain and "authorization" not in plain


def test_environment_files_name_only_settings_that_exist() -> None:
    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)} | {"PGPASSWORD"}
    files = sorted(p for p in (MULTISITE / "env").glob("*.env")  # replica-N.env: the replica's
                   if not p.name.startswith("replica-"))  # own names (test_replica_unit.py)
    assert [f.name for f in files] == ["backup.env", "central-1.env", "central-2.env"]
    ports = set()
    for path in files:
        names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", path.read_text(), re.MULTILINE)
        assert names and set(names) <= known, (path.name, set(names) - known)
        ports |= set(re.findall(r"^FLOORSYNC_HTTP_PORT=(\d+)$", path.read_text(), re.MULTILINE))
    assert len(ports) == 2, "each replica on a host listens on its own port"
