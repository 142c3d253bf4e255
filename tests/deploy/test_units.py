"""The systemd units of deploy/: `systemd-analyze verify` passes on them as installed, and
`systemd-analyze security` rates each at OK or better (exposure <= 2.0) while the edge keeps
its scanners, readers and state directory, and the server its state directory and network."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from .conftest import DEPLOY, unit

UNITS = ("floorsync-edge.service", "floorsync-server.service")
MAX_EXPOSURE = 2.0
# The device classes an edge opens: USB-serial and CDC-ACM scanners, on-board serial ports, and
# evdev (keyboard-wedge scanners); and the groups that own them (deploy/udev/99-floorsync.rules).
EDGE_DEVICES = {"char-ttyUSB", "char-ttyACM", "char-ttyS", "char-input"}
EDGE_GROUPS = {"dialout", "input"}
# The kernel module that puts each class into /proc/devices (None: built into Debian's kernels).
CLASS_MODULES = {"char-ttyUSB": "usbserial", "char-ttyACM": "cdc_acm", "char-ttyS": None,
                 "char-input": None}


def verify(systemd_analyze: str, root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze, "verify", "--man=no", f"--root={root}", name],
        capture_output=True, text=True, timeout=120,
    )


def security(systemd_analyze: str, name: str, path: Path | None = None) -> tuple[float, str, str]:
    """(exposure, rating, the whole report) of `systemd-analyze security --offline=yes`."""
    path = path or DEPLOY / "systemd" / name
    done = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    report = done.stdout + done.stderr
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d) (\w+)", report)
    assert found, f"no exposure level in the report of {name}:\n{report}"
    return float(found.group(1)), found.group(2), report


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_as_installed(systemd_analyze: str, host_root: Path, name: str) -> None:
    """verify checks the unit where install.sh put it, against the root's ExecStart binary and
    systemd targets; any warning (an unknown or misspelt key) counts as a failure too."""
    done = verify(systemd_analyze, host_root, name)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_verify_fails_without_the_installed_binary(systemd_analyze: str, host_root: Path) -> None:
    """The check above can fail: without /opt/floorsync/venv/bin/floorsync the unit is refused."""
    (host_root / "opt/floorsync/venv/bin/floorsync").unlink()
    done = verify(systemd_analyze, host_root, "floorsync-edge.service")
    assert done.returncode != 0 and "/opt/floorsync/venv/bin/floorsync" in done.stderr


def test_verify_reports_a_misspelt_key(systemd_analyze: str, host_root: Path) -> None:
    installed = host_root / "etc/systemd/system/floorsync-server.service"
    installed.write_text(installed.read_text().replace("UMask=", "UMsk=", 1))
    done = verify(systemd_analyze, host_root, "floorsync-server.service")
    assert "Unknown key" in done.stderr and "UMsk" in done.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_is_ok(systemd_analyze: str, name: str) -> None:
    exposure, rating, report = security(systemd_analyze, name)
    assert exposure <= MAX_EXPOSURE and rating in {"OK", "SAFE"}, report


def test_an_unhardened_unit_is_rated_exposed(systemd_analyze: str, tmp_path: Path) -> None:
    """The rating is read right: the edge unit without its hardening section is far over 2.0."""
    text = (DEPLOY / "systemd" / "floorsync-edge.service").read_text()
    bare = tmp_path / "floorsync-edge.service"
    bare.write_text(text.split("# Hardening.")[0] + "\n[Install]\nWantedBy=multi-user.target\n")
    exposure, rating, report = security(systemd_analyze, bare.name, bare)
    assert exposure > 5.0 and rating in {"EXPOSED", "UNSAFE"}, report


def test_edge_keeps_its_devices_and_state_directory(systemd_analyze: str) -> None:
    """The hardening leaves the edge what it works with, as systemd itself reads the unit."""
    _, _, report = security(systemd_analyze, "floorsync-edge.service")
    device_acl = re.search(r"DeviceAllow=\s+.*?: (.*?)\s+\d+\.\d\s*$", report, re.MULTILINE)
    assert device_acl, report
    granted = dict(entry.split(":") for entry in device_acl.group(1).split())
    assert {cls: granted.get(cls) for cls in EDGE_DEVICES} == {cls: "rw" for cls in EDGE_DEVICES}
    u = unit("floorsync-edge.service")
    assert u["DevicePolicy"] == ["closed"] and "PrivateDevices" not in u
    assert set(u["SupplementaryGroups"][0].split()) == EDGE_GROUPS
    assert "PrivateUsers" not in u, "PrivateUsers= would unmap dialout and input"
    assert u["StateDirectory"] == ["floorsync"] and u["ProtectSystem"] == ["strict"]
    assert u["WorkingDirectory"] == ["/var/lib/floorsync"]


def test_edge_device_classes_exist_when_it_starts() -> None:
    """char-ttyUSB/char-ttyACM are resolved through /proc/devices when the unit starts: the
    drivers of the USB classes must be loaded at boot (deploy/modules-load/floorsync.conf)."""
    lines = (DEPLOY / "modules-load" / "floorsync.conf").read_text().splitlines()
    loaded = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    allowed = {value.split()[0] for value in unit("floorsync-edge.service")["DeviceAllow"]}
    assert allowed == EDGE_DEVICES
    assert {CLASS_MODULES[cls] for cls in allowed} - {None} == loaded


def test_server_keeps_its_network_and_state_directory() -> None:
    u = unit("floorsync-server.service")
    families = set(u["RestrictAddressFamilies"][0].split())
    assert {"AF_INET", "AF_INET6"} <= families
    assert "PrivateNetwork" not in u and "IPAddressDeny" not in u
    assert u["StateDirectory"] == ["floorsync"] and u["ProtectSystem"] == ["strict"]
    assert u["PrivateDevices"] == ["yes"] and "SupplementaryGroups" not in u


def test_units_match_the_documented_install() -> None:
    """User, venv, config and state paths of the units are those deploy/README.md installs."""
    readme = (DEPLOY / "README.md").read_text()
    useradd = re.search(r"^useradd (.*)$", readme, re.MULTILINE)
    venv = re.search(r"^python3 -m venv (\S+)$", readme, re.MULTILINE)
    assert useradd and venv
    words = shlex.split(useradd.group(1))
    user, home = words[-1], words[words.index("--home-dir") + 1]
    for name in UNITS:
        u = unit(name)
        assert u["User"] == [user] and u["Group"] == [user]
        assert u["WorkingDirectory"] == [home] == ["/var/lib/" + u["StateDirectory"][0]]
        assert shlex.split(u["ExecStart"][0])[0] == venv.group(1) + "/bin/floorsync"
        assert f"deploy/systemd/{name} /etc/systemd/system/" in readme
    edge = shlex.split(unit("floorsync-edge.service")["ExecStart"][0])
    assert f"/etc/floorsync/{Path(edge[edge.index('--config') + 1]).name}" in readme
    assert unit("floorsync-server.service")["EnvironmentFile"][0] in readme
