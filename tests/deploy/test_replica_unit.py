"""deploy/multisite's NATS replica: floorsync-replica@.service verifies as installed, keeps
floorsync-server.service's hardening and rates OK (exposure at most 2.0) in systemd-analyze
security; env/replica-1.env names only settings that exist and is read by the replica's own
settings code as it stands (its files laid out under a temporary root)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from floorsync.server.replica import ENV_NAMES, ReplicaSettings
from floorsync.server.settings import ENV_PREFIX, Settings
from tests.security.pki import TestCA

from .conftest import DEPLOY
from .test_units import MAX_EXPOSURE, security, verify

MULTISITE = DEPLOY / "multisite"
UNIT = MULTISITE / "systemd" / "floorsync-replica@.service"
ENV_FILE = MULTISITE / "env" / "replica-1.env"
LIBPQ = {"PGSSLMODE", "PGSSLROOTCERT", "PGPASSFILE"}  # libpq reads these itself


def _hardening(path: Path) -> list[str]:
    text = path.read_text()
    return text[text.index("# Hardening:"):].split("[Install]")[0].strip().splitlines()


def _unit_lines(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
            if line.startswith(key + "=")]


def _env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads these (no quoting used here)."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith("#"))


def test_unit_verifies_as_installed(systemd_analyze: str, host_root: Path) -> None:
    shutil.copy2(UNIT, host_root / "etc/systemd/system" / UNIT.name)
    done = verify(systemd_analyze, host_root, "floorsync-replica@1.service")
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_unit_keeps_the_servers_hardening_and_rates_ok(systemd_analyze: str, tmp_path: Path
                                                       ) -> None:
    assert _hardening(UNIT) == _hardening(DEPLOY / "systemd" / "floorsync-server.service")
    instance = tmp_path / "floorsync-replica@1.service"
    instance.write_text(UNIT.read_text())
    exposure, rating, report = security(systemd_analyze, instance.name, instance)
    assert exposure <= MAX_EXPOSURE and rating in {"OK", "SAFE"}, report


def test_unit_runs_the_replica_with_its_secrets_as_credentials() -> None:
    assert _unit_lines("ExecStart") == ["/opt/floorsync/venv/bin/floorsync server --replica"]
    assert _unit_lines("EnvironmentFile") == ["/etc/floorsync/replica-%i.env"]
    credentials = dict(c.split(":", 1) for c in _unit_lines("LoadCredential"))
    assert credentials == {"nats-password": "/etc/floorsync/nats-password",
                           "pgpass": "/etc/floorsync/pgpass"}
    environment = dict(e.split("=", 1) for e in _unit_lines("Environment"))
    assert environment["FLOORSYNC_NATS_PASSWORD_FILE"] == "%d/nats-password"
    assert environment["PGPASSFILE"] == "%d/pgpass"


def test_env_file_names_only_settings_that_exist() -> None:
    known = ({ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
             | set(ENV_NAMES) | LIBPQ)
    names = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", ENV_FILE.read_text(), re.MULTILINE)
    assert names and set(names) <= known, set(names) - known
    unit_names = {e.split("=", 1)[0] for e in _unit_lines("Environment")}
    assert unit_names <= known | {"PYTHONUNBUFFERED"}, unit_names - known
    text = ENV_FILE.read_text()
    assert "PASSWORD=" not in text and not re.search(r"://[^/@\s]*:[^/@\s]*@", text), \
        "no secret in the env file"


def test_env_file_as_the_replica_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """Every file it names laid out under a temporary root (certificates of a test CA), the
    credentials as systemd hands them: the replica's settings take it, TLS and login on."""
    ca = TestCA.create(tmp_path / "pki")
    root = tmp_path / "root"
    env = {k: v.replace("/etc/", f"{root}/etc/") for k, v in _env(ENV_FILE).items()}
    metrics = ca.server("replica-metrics")
    files = {"nats-ca.crt": ca.cert, "db-ca.crt": ca.cert, "prometheus-ca.crt": ca.cert,
             "replica-metrics.crt": metrics.cert, "replica-metrics.key": metrics.key}
    (root / "etc/floorsync/tls").mkdir(parents=True)
    for name, source in files.items():
        shutil.copy2(source, root / "etc/floorsync/tls" / name)
    credentials = tmp_path / "credentials"  # %d
    credentials.mkdir()
    (credentials / "nats-password").write_text("from-the-credential\n")
    for line in _unit_lines("Environment"):
        key, value = line.split("=", 1)
        env[key] = value.replace("%d", str(credentials))
    found = ReplicaSettings.from_env(None, env=env)
    assert found.servers == tuple(f"tls://nats{i}.floorsync.example:4222" for i in (1, 2, 3))
    assert found.login.tls_required and found.login.ca_file is not None
    assert (found.login.user, found.login.password) == ("floorsync-central",
                                                        "from-the-credential")
    assert found.login.tls_context() is not None
    assert (found.metrics.host, found.metrics.scheme) == ("0.0.0.0", "https")
    assert found.metrics.client_ca_file is not None
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    central = Settings.from_env()  # the database and metrics port are the service's settings
    assert central.metrics_port == 9109
    assert central.database == "postgresql://floorsync@db.floorsync.example:5432/floorsync"


@pytest.mark.parametrize("name", ["central-1.env", "central-2.env"])
def test_central_env_files_say_nothing_is_still_to_come(name: str) -> None:
    text = (MULTISITE / "env" / name).read_text()
    assert "once the server side is wired" not in text and "lands;" not in text
