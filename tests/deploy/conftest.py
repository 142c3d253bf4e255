"""Fixtures of the deploy tests: the system tools they run, and a host root that deploy/install.sh
filled (the way the install steps of deploy/README.md lay the files out)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_FLOORSYNC = ROOT / ".venv" / "bin" / "floorsync"


def unit(name: str) -> dict[str, list[str]]:
    """A unit file as key -> values (keys may repeat, as DeviceAllow= does)."""
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def require_tool(name: str, *, minimum: int = 0, install: str) -> str:
    """The tool's path. Missing (or older than `minimum`, systemd's version): a failure under CI
    (CI=true, where `make test` installs it), a skip with the reason elsewhere; never a pass."""
    path = shutil.which(name)
    problem = None if path else f"{name} is not installed"
    if path and minimum:
        first = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        found = re.match(r"systemd (\d+)", first)
        if not found or int(found.group(1)) < minimum:
            problem = f"{name} is older than systemd {minimum}: {first.splitlines()[:1]}"
    if problem is None:
        assert path is not None
        return path
    message = f"{problem}; install it with `{install}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def systemd_analyze() -> str:
    # --offline (security of a unit file that is not loaded) came with systemd 252.
    return require_tool("systemd-analyze", minimum=252, install="sh deploy/bootstrap.sh systemd")


def install(
    role: str, destdir: Path, *, venv: bool = False, source: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh ROLE into destdir; with venv, the venv too (pip, from PyPI), floorsync
    itself from source."""
    env = {**os.environ, "DESTDIR": str(destdir), "FLOORSYNC_VENV": "yes" if venv else "no",
           "PYTHON": sys.executable}
    if source:
        env["FLOORSYNC_SOURCE"] = str(source)
    return subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), role], env=env,
        capture_output=True, text=True, timeout=240,
    )


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A root as an edge-and-server host would have it after the install steps: the files from
    install.sh; as /opt/floorsync/venv/bin/floorsync this checkout's own console script (the one
    `pip install` makes; install.sh makes no venv under DESTDIR); and the distribution's systemd
    targets, which the units' dependencies name."""
    root = tmp_path / "root"
    for role in ("edge", "server"):
        done = install(role, root)
        assert done.returncode == 0, done.stderr
    bin_dir = root / "opt/floorsync/venv/bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(VENV_FLOORSYNC, bin_dir / "floorsync")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy2(target, units / target.name)
    return root
