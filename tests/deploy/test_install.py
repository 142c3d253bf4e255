"""deploy/install.sh, run into a temporary root (DESTDIR, no root needed): the files land where
the units and deploy/README.md's install steps say, with their modes; configuration the
operator edited is kept."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from .conftest import DEPLOY, install

SECRET = 0o640   # config with passwords or tokens: owner and group floorsync only
PUBLIC = 0o644


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readme_installs(role: str) -> list[tuple[int, str, str]]:
    """(mode, source, target file) of each `install -m` line of README's Install section that a
    host of the role runs: the common part, then the role's own subsection."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    common, *parts = section.split("\n### ")
    heading = "Edge hosts" if role == "edge" else "The central host"
    own = [part for part in parts if part.startswith(heading)]
    assert len(own) == 1, f"README's Install section has no '### {heading}'"
    out = []
    line = re.compile(r"^install -m (\d+) (?:-g \S+ )?(\S+) (\S+)", re.MULTILINE)
    for m in line.finditer(common + own[0]):
        source, target = m.group(2), m.group(3)
        if target.endswith("/"):
            target += Path(source).name
        out.append((int(m.group(1), 8), source, target))
    return out


@pytest.mark.parametrize("role", ["edge", "server"])
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
    unit = tmp_path / f"etc/systemd/system/floorsync-{role}.service"
    assert mode(unit) == PUBLIC
    config = tmp_path / "etc/floorsync" / ("edge.toml" if role == "edge" else "server.env")
    assert mode(config) == SECRET
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
