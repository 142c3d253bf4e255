"""deploy/install.sh, run into a temporary root (DESTDIR, no root needed): the files land where
the units and deploy/README.md's install steps say, with their modes; configuration the
operator edited is kept."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from .conftest import DEPLOY, install
from .test_locks import ROLES, read_lock

SECRET = 0o640   # config with passwords or tokens: owner and group floorsync only
PUBLIC = 0o644
# Each role: its subsection of deploy/README.md's Install section, the unit it installs, its
# configuration in /etc/floorsync.
HEADING = {"edge": "Edge hosts", "server": "The central host", "central": "Central replicas"}
UNIT = {"edge": ["floorsync-edge.service"], "server": ["floorsync-server.service"],
        "central": ["floorsync-central@.service", "floorsync-replica@.service"]}
CONFIG = {"edge": ["edge.toml"], "server": ["server.env"],
          "central": ["central-1.env", "replica-1.env"]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readme_section(role: str) -> tuple[str, str]:
    """The common part of deploy/README.md's Install section and the role's own subsection."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    common, *parts = section.split("\n### ")
    own = [part for part in parts if part.startswith(HEADING[role])]
    assert len(own) == 1, f"README's Install section has no '### {HEADING[role]}'"
    return common, own[0]


def readme_installs(role: str) -> list[tuple[int, str, str]]:
    """(mode, source, target file) of each `install -m` line of README's Install section that a
    host of the role runs: the common part, then the role's own subsection."""
    common, own = readme_section(role)
    out = []
    line = re.compile(r"^install -m (\d+) (?:-g \S+ )?(\S+) (\S+)", re.MULTILINE)
    for m in line.finditer(common + own):
        source, target = m.group(2), m.group(3)
        if target.endswith("/"):
            target += Path(source).name
        out.append((int(m.group(1), 8), source, target))
    return out


def test_every_role_is_tested() -> None:
    """The roles checked here are install.sh's (test_locks checks they are the locks')."""
    assert set(HEADING) == set(UNIT) == set(CONFIG) == set(ROLE_MODULES) == set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_readme_installs_the_roles_lock(role: str) -> None:
    _, own = readme_section(role)
    assert "pip install --require-hashes --no-deps -r " \
        f"deploy/constraints/{role}.txt\n" in own, own


@pytest.mark.parametrize("role", ROLES)
def test_install_lays_out_the_documented_files(role: str, tmp_path: Path) -> None:
    done = install(role, tmp_path)
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "etc/floorsync") == 0o750
    steps = readme_installs(role)
    assert len(steps) >= 2, steps
    for wanted, source, target in steps:
        landed = tmp_path / target.lstrip("/")
        assert landed.is_file(), f"README installs {source} to {target}; install.sh did not"
        assert mode(landed) == wanted, f"{target}: {oct(mode(landed))}, README says {oct(wanted)}"
        assert landed.read_bytes() == (DEPLOY.parent / source).read_bytes()
    units = sorted(p.name for p in (tmp_path / "etc/systemd/system").iterdir())
    assert units == sorted(UNIT[role])
    assert all(mode(tmp_path / "etc/systemd/system" / u) == PUBLIC for u in UNIT[role])
    configs = sorted(p.name for p in (tmp_path / "etc/floorsync").iterdir())
    assert configs == sorted(CONFIG[role])
    assert all(mode(tmp_path / "etc/floorsync" / c) == SECRET for c in CONFIG[role])
    extra = [tmp_path / "etc/udev/rules.d/99-floorsync.rules",
             tmp_path / "etc/modules-load.d/floorsync.conf"]
    if role == "edge":
        assert all(p.is_file() and mode(p) == PUBLIC for p in extra)
    else:
        assert not any(p.exists() for p in extra), "udev rules on the central host"


def test_install_keeps_the_operators_config(tmp_path: Path) -> None:
    assert install("edge", tmp_path).returncode == 0
    config = tmp_path / "etc/floorsync/edge.toml"
    config.write_text("# edited on site\n")
    again = install("edge", tmp_path)
    assert again.returncode == 0 and "keeping /etc/floorsync/edge.toml" in again.stdout
    assert config.read_text() == "# edited on site\n"
    # ... while the unit, which the operator does not edit, is brought up to date
    unit = tmp_path / "etc/systemd/system/floorsync-edge.service"
    assert unit.read_bytes() == (DEPLOY / "systemd/floorsync-edge.service").read_bytes()


def test_install_refuses_an_unknown_role(tmp_path: Path) -> None:
    done = install("dock", tmp_path)
    assert done.returncode == 2 and "usage" in done.stderr
    assert not (tmp_path / "etc").exists()


NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                    ".*_cache", "*.db", "*.db-wal", "*.db-shm")
# The modules a host of each role runs, and what must not be on an edge host.
ROLE_MODULES = {
    "edge": ["floorsync.cli", "floorsync.edge.sync", "floorsync.edge.agent", "floorsync.devices"],
    "server": ["floorsync.cli", "floorsync.server.app", "floorsync.server.run"],
    # the PostgreSQL store and the NATS client of a replica of a network of sites
    "central": ["floorsync.cli", "floorsync.server.app", "floorsync.server.run",
                "floorsync.server.pg", "psycopg", "psycopg_pool", "nats.js"],
}


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_install_makes_a_venv_from_the_lock_alone(role: str, tmp_path: Path) -> None:
    """The whole install, venv included (from PyPI, with --require-hashes): exactly the pinned
    versions land, nothing is missing for the role's modules, and an edge has no web stack."""
    # floorsync itself from a copy of the checkout, so pip's build leaves nothing in the tree
    source = tmp_path / "source"
    shutil.copytree(DEPLOY.parent, source, symlinks=True, ignore=NOT_SOURCE)
    root = tmp_path / "root"
    done = install(role, root, venv=True, source=source)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    python = root / "opt/floorsync/venv/bin/python"
    pip = [str(python), "-m", "pip"]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    frozen = subprocess.run([*pip, "freeze", "--all", "--exclude", "floorsync"],
                            capture_output=True, text=True, check=True).stdout.split()
    installed = {canonicalize_name(n): v for n, _, v in (line.partition("==") for line in frozen)}
    pinned = {name: str(pin.version) for name, pin in read_lock(role).items()
              if not pin.marker or Marker(pin.marker).evaluate()}
    # venv's own pip and setuptools stay unless the lock pins them
    assert {n: v for n, v in installed.items() if n not in {"pip", "setuptools"} or n in pinned} \
        == pinned
    probe = "import importlib, sys\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in ROLE_MODULES[role]
    ) + "print('fastapi' in sys.modules or importlib.util.find_spec('fastapi') is not None)"
    ran = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == ("False" if role == "edge" else "True")
    assert (root / "opt/floorsync/venv/bin/floorsync").is_file()
