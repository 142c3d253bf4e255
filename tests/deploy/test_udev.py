"""deploy/udev/99-floorsync.rules: `udevadm verify` where the host's udev has it (systemd >= 253);
everywhere, a parser of udev's rule syntax, and the rules' groups, modes and device classes
checked against the edge unit's SupplementaryGroups= and DeviceAllow=."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from .conftest import DEPLOY
from .test_units import unit

RULES = DEPLOY / "udev" / "99-floorsync.rules"
# udev(7): the keys a rule may match on and the keys it may assign (some are both).
MATCH_KEYS = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "NAME", "SYMLINK", "SUBSYSTEM",
              "SUBSYSTEMS", "DRIVER", "DRIVERS", "ATTR", "ATTRS", "SYSCTL", "ENV", "CONST",
              "TAG", "TAGS", "TEST", "PROGRAM", "RESULT"}
ASSIGN_KEYS = {"NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "SECLABEL", "ATTR", "SYSCTL", "ENV",
               "TAG", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS"}
NEEDS_ATTR = {"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL"}
TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^{}"]+)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
# Which udev subsystem a DeviceAllow= class of the edge unit is, and the group udev gives it.
CLASSES = {"tty": ({"char-ttyUSB", "char-ttyACM"}, "dialout"), "input": ({"char-input"}, "input")}


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    line: int
    match: dict[str, str]   # "ENV{ID_VENDOR_ID}" -> "0c2e" (== only; != is kept as "!key")
    assign: dict[str, str]


def parse(text: str) -> list[Rule]:
    """udev's rule syntax, as far as these rules use it: comma-separated KEY[{attr}]OP"value"."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            raise RuleError(f"line {number}: continuation lines are not used here")
        match: dict[str, str] = {}
        assign: dict[str, str] = {}
        pos = 0
        while pos < len(line):
            token = TOKEN.match(line, pos)
            if not token or token.end() == pos:
                raise RuleError(f"line {number}: cannot read {line[pos:]!r}")
            key, attr, op, value = token.groups()
            name = f"{key}{{{attr}}}" if attr else key
            if (key in NEEDS_ATTR) != bool(attr):
                raise RuleError(f"line {number}: {key} {'needs' if not attr else 'takes no'} {{}}")
            if op in {"==", "!="}:
                if key not in MATCH_KEYS:
                    raise RuleError(f"line {number}: {key} cannot be matched")
                match[name if op == "==" else "!" + name] = value
            else:
                if key not in ASSIGN_KEYS:
                    raise RuleError(f"line {number}: {key} cannot be assigned")
                assign[name] = value
            pos = token.end()
        if not match or not assign:
            raise RuleError(f"line {number}: a rule needs a match and an assignment")
        rules.append(Rule(number, match, assign))
    return rules


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('SUBSYSTEM=="tty", GROUP=="dialout"', "GROUP cannot be matched"),
        ('SUBSYSTEM=="tty", GROUP="dialout', "cannot read"),
        ('SUBSYSTEM=="tty", ENV="1", MODE="0660"', "needs"),
        ('SUBSYTEM=="tty", MODE="0660"', "cannot be matched"),
        ('SUBSYSTEM=="tty" MODE="0660"', "cannot read"),
    ],
)
def test_parser_refuses_broken_rules(line: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        parse(line)


def test_rules_parse() -> None:
    assert len(parse(RULES.read_text())) == 6


def test_rules_agree_with_the_edge_unit() -> None:
    """Every device a rule opens up is one the edge unit may open, through a group it has;
    nobody else gets access (mode 0660), and each vendor is covered in both scanner modes."""
    u = unit("floorsync-edge.service")
    groups = set(u["SupplementaryGroups"][0].split())
    allowed = {value.split()[0] for value in u["DeviceAllow"] if value.endswith("rw")}
    vendors: dict[str, set[str]] = {}
    for rule in parse(RULES.read_text()):
        subsystem = rule.match["SUBSYSTEM"]
        classes, group = CLASSES[subsystem]
        assert classes <= allowed, f"line {rule.line}: {classes - allowed} not in DeviceAllow="
        assert rule.assign["GROUP"] == group and group in groups, f"line {rule.line}"
        assert re.fullmatch(r"0[0-7][0-7]0", rule.assign["MODE"]), f"line {rule.line}: others"
        assert not rule.assign.get("OWNER"), f"line {rule.line}: a device owned by one user"
        vendor = rule.match["ENV{ID_VENDOR_ID}"]
        assert re.fullmatch(r"[0-9a-f]{4}", vendor), f"line {rule.line}: {vendor!r}"
        if subsystem == "input":
            assert rule.match["KERNEL"] == "event*", f"line {rule.line}: evdev nodes only"
        else:
            assert rule.assign["ENV{ID_MM_DEVICE_IGNORE}"] == "1", "ModemManager probes ports"
        vendors.setdefault(vendor, set()).add(subsystem)
    assert vendors and all(found == set(CLASSES) for found in vendors.values()), vendors


def test_udevadm_verify() -> None:
    """udev's own checker. It came with systemd 253; Debian 12's udev (252) has none, so there
    this is a skip and the parser above is the check."""
    udevadm = shutil.which("udevadm")
    if not udevadm:
        pytest.skip("udevadm is not installed (package udev)")
    help_text = subprocess.run([udevadm, "--help"], capture_output=True, text=True).stdout
    if not re.search(r"^\s+verify\b", help_text, re.MULTILINE):
        pytest.skip("this udevadm has no 'verify' (systemd < 253)")
    done = subprocess.run([udevadm, "verify", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
