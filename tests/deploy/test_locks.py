"""deploy/constraints/: the deployment pins agree with pyproject.toml's edge and server extras and
cover every package those extras pull in, each pinned with == and hashed. Offline: pyproject and
the lock files are read with `packaging`, the transitive check uses the metadata of this venv's
distributions where their version is the pinned one."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import DEPLOY, ROOT

EXTRAS = ("edge", "server")
FIX = "run `make lock`, then the tests, and commit deploy/constraints/"
# The web stack, which an edge host must not need, and the GPL-3.0 LLRP client (its own extra).
SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "pydantic", "amqtt", "jsonschema"}
NEVER = {"sllurp"}


@dataclass(frozen=True)
class Pin:
    version: Version
    marker: str
    hashes: int
    via: frozenset[str]


def extra_requirements(extra: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["optional-dependencies"][extra]]


def read_lock(extra: str) -> dict[str, Pin]:
    """name -> Pin of a `uv pip compile --generate-hashes` output."""
    text = (DEPLOY / "constraints" / f"{extra}.txt").read_text()
    pins: dict[str, Pin] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if block.startswith("#") or not block.strip():
            continue
        head = block.split("\\", 1)[0].strip()
        req = Requirement(head)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{extra}.txt: {head!r} is not =="
        via = re.findall(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9._-]+)", block, re.MULTILINE)
        name = canonicalize_name(req.name)
        assert name not in pins, f"{extra}.txt pins {name} twice"
        pins[name] = Pin(Version(spec[0].version), str(req.marker or ""),
                         block.count("--hash=sha256:"), frozenset(v for v in via if v != "via"))
    return pins


def stale(extra: str, why: str) -> str:
    return f"deploy/constraints/{extra}.txt does not match pyproject.toml's [{extra}] extra " \
           f"({why}): {FIX}"


@pytest.mark.parametrize("extra", EXTRAS)
def test_lock_pins_each_requirement_of_the_extra_within_its_range(extra: str) -> None:
    pins = read_lock(extra)
    problems = []
    for req in extra_requirements(extra):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}=={pin.version} is outside {req.specifier}")
    assert not problems, stale(extra, "; ".join(problems))


@pytest.mark.parametrize("extra", EXTRAS)
def test_lock_has_nothing_the_extra_no_longer_asks_for(extra: str) -> None:
    """What the lock says came straight from pyproject is exactly the extra's list."""
    direct = {name for name, pin in read_lock(extra).items() if "floorsync" in pin.via}
    wanted = {canonicalize_name(req.name) for req in extra_requirements(extra)}
    assert direct == wanted, stale(extra, f"pinned as direct only: {sorted(direct - wanted)}, "
                                          f"not pinned as direct: {sorted(wanted - direct)}")


@pytest.mark.parametrize("extra", EXTRAS)
def test_lock_covers_the_dependencies_of_its_pins(extra: str) -> None:
    """Every requirement of a pinned package is pinned too. Read from the installed metadata of
    the pins this venv has at exactly the pinned version (others cannot be read offline)."""
    pins = read_lock(extra)
    asked: dict[str, set[str]] = {
        canonicalize_name(r.name): set(r.extras) for r in extra_requirements(extra)
    }
    checked, missing = 0, []
    for name, pin in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != pin.version:
            continue
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            extras = {""} | asked.get(name, set())
            # markers against this interpreter (3.11 on Linux, the deployment's)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            if canonicalize_name(req.name) not in pins:
                missing.append(f"{req.name} (needed by {name}=={pin.version})")
    assert checked, f"none of the {len(pins)} pins is installed here at its pinned version"
    assert not missing, stale(extra, "not pinned: " + ", ".join(sorted(missing)))


@pytest.mark.parametrize("extra", EXTRAS)
def test_every_pin_is_wanted_by_the_extra(extra: str) -> None:
    """The resolver's own record: each pin is wanted by floorsync or by another pin, so the pins
    form one tree from the extra (nothing orphaned, nothing wanted that is not pinned)."""
    pins = read_lock(extra)
    problems = [f"{name} is wanted by {sorted(pin.via - set(pins) - {'floorsync'})}"
                for name, pin in pins.items() if not pin.via or pin.via - set(pins) - {"floorsync"}]
    assert not problems, stale(extra, "; ".join(problems))


@pytest.mark.parametrize("extra", EXTRAS)
def test_every_pin_is_hashed(extra: str) -> None:
    unhashed = [name for name, pin in read_lock(extra).items() if pin.hashes == 0]
    assert not unhashed, stale(extra, f"no hashes for {unhashed}")


def test_edge_lock_has_no_web_stack_and_neither_has_the_gpl_client() -> None:
    edge, server = set(read_lock("edge")), set(read_lock("server"))
    assert not edge & (SERVER_ONLY | NEVER), edge & (SERVER_ONLY | NEVER)
    assert not server & NEVER


def test_the_check_sees_a_missing_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above can fail: an extra that asks for an unpinned package is reported with
    the command that fixes it."""
    original = extra_requirements
    monkeypatch.setitem(
        globals(), "extra_requirements",
        lambda extra: [*original(extra), Requirement("no-such-floorsync-dep>=1")],
    )
    with pytest.raises(AssertionError, match=r"no-such-floorsync-dep is not pinned.*make lock"):
        test_lock_pins_each_requirement_of_the_extra_within_its_range("edge")
