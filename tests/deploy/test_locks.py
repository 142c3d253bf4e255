"""deploy/constraints/: one lock a role of deploy/install.sh (edge, server, central), each made by
the Makefile's `lock` target from some of pyproject.toml's extras. The pins agree with those
extras and cover every package they pull in, each pinned with == and hashed. Offline: pyproject,
the Makefile and the lock files are read with `packaging`; the transitive check uses the metadata
of this venv's distributions where their version is the pinned one."""

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


def lock_extras() -> dict[str, tuple[str, ...]]:
    """role -> the extras its lock is compiled from: each `uv pip compile` of the Makefile's
    `lock` target (continued lines joined)."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    target = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    out = {}
    for line in target.splitlines():
        if "pip compile" in line:
            role = re.search(r"-o deploy/constraints/([\w-]+)\.txt", line)
            assert role, f"the lock target writes elsewhere than deploy/constraints/: {line}"
            out[role.group(1)] = tuple(re.findall(r"--extra (\S+)", line))
    return out


ROLES = lock_extras()
CENTRAL = ("server", "postgresql", "cluster")  # a replica of a network of sites


def install_roles() -> set[str]:
    """The roles deploy/install.sh accepts (its `case "$role"` line)."""
    found = re.search(r'^case "\$role" in\n([\w|-]+)\)', (DEPLOY / "install.sh").read_text(),
                      re.MULTILINE)
    assert found, "deploy/install.sh: no case over the roles"
    return set(found.group(1).split("|"))


def extra_requirements(role: str) -> list[Requirement]:
    """The requirements of the extras the role's lock is made from."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(text) for extra in ROLES[role] for text in extras[extra]]


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


def stale(role: str, why: str) -> str:
    extras = ", ".join(f"[{e}]" for e in ROLES[role])
    return f"deploy/constraints/{role}.txt does not match pyproject.toml's {extras} " \
           f"extra{'s' * (len(ROLES[role]) > 1)} ({why}): {FIX}"


def test_every_install_role_has_a_lock_made_by_make_lock() -> None:
    """install.sh's roles, the Makefile's locks and the files in deploy/constraints/ are the
    same set, and the central replica's lock is made from the extras it runs on."""
    files = {p.stem for p in (DEPLOY / "constraints").glob("*.txt")}
    assert install_roles() == set(ROLES) == files, (install_roles(), ROLES, files)
    assert ROLES == {"edge": ("edge",), "server": ("server",), "central": CENTRAL}, ROLES


def test_central_lock_is_the_servers_plus_its_own() -> None:
    """Every package of server.txt at the same version in central.txt (a site's central host
    and its network's replicas run the same stack), plus PostgreSQL's and the cluster's."""
    server, central = read_lock("server"), read_lock("central")
    differ = {n: (str(p.version), str(central[n].version) if n in central else None)
              for n, p in server.items() if n not in central or central[n].version != p.version}
    assert not differ, stale("central", f"server.txt -> central.txt: {differ}")
    assert {"psycopg", "psycopg-pool", "psycopg-binary", "nats-py"} <= set(central) - set(server)


@pytest.mark.parametrize("role", ROLES)
def test_lock_pins_each_requirement_of_the_extra_within_its_range(role: str) -> None:
    pins = read_lock(role)
    problems = []
    for req in extra_requirements(role):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}=={pin.version} is outside {req.specifier}")
    assert not problems, stale(role, "; ".join(problems))


@pytest.mark.parametrize("role", ROLES)
def test_lock_has_nothing_the_extra_no_longer_asks_for(role: str) -> None:
    """What the lock says came straight from pyproject is exactly the extra's list."""
    direct = {name for name, pin in read_lock(role).items() if "floorsync" in pin.via}
    wanted = {canonicalize_name(req.name) for req in extra_requirements(role)}
    assert direct == wanted, stale(role, f"pinned as direct only: {sorted(direct - wanted)}, "
                                         f"not pinned as direct: {sorted(wanted - direct)}")


@pytest.mark.parametrize("role", ROLES)
def test_lock_covers_the_dependencies_of_its_pins(role: str) -> None:
    """Every requirement of a pinned package is pinned too. Read from the installed metadata of
    the pins this venv has at exactly the pinned version (others cannot be read offline)."""
    pins = read_lock(role)
    asked: dict[str, set[str]] = {
        canonicalize_name(r.name): set(r.extras) for r in extra_requirements(role)
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
    assert not missing, stale(role, "not pinned: " + ", ".join(sorted(missing)))


@pytest.mark.parametrize("role", ROLES)
def test_every_pin_is_wanted_by_the_extra(role: str) -> None:
    """The resolver's own record: each pin is wanted by floorsync or by another pin, so the pins
    form one tree from the extra (nothing orphaned, nothing wanted that is not pinned)."""
    pins = read_lock(role)
    problems = [f"{name} is wanted by {sorted(pin.via - set(pins) - {'floorsync'})}"
                for name, pin in pins.items() if not pin.via or pin.via - set(pins) - {"floorsync"}]
    assert not problems, stale(role, "; ".join(problems))


@pytest.mark.parametrize("role", ROLES)
def test_every_pin_is_hashed(role: str) -> None:
    unhashed = [name for name, pin in read_lock(role).items() if pin.hashes == 0]
    assert not unhashed, stale(role, f"no hashes for {unhashed}")


def test_edge_lock_has_no_web_stack_and_neither_has_the_gpl_client() -> None:
    edge = set(read_lock("edge"))
    assert not edge & (SERVER_ONLY | NEVER), edge & (SERVER_ONLY | NEVER)
    for role in set(ROLES) - {"edge"}:
        assert not set(read_lock(role)) & NEVER, role


@pytest.mark.parametrize("role", ROLES)
def test_the_check_sees_a_missing_pin(role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above can fail: an extra that asks for an unpinned package is reported with
    the command that fixes it."""
    original = extra_requirements
    monkeypatch.setitem(
        globals(), "extra_requirements",
        lambda role: [*original(role), Requirement("no-such-floorsync-dep>=1")],
    )
    with pytest.raises(AssertionError, match=r"no-such-floorsync-dep is not pinned.*make lock"):
        test_lock_pins_each_requirement_of_the_extra_within_its_range(role)


@pytest.mark.parametrize("role", ROLES)
def test_the_check_sees_a_dropped_pin(role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock made before its extra gained a requirement (as prometheus-client and
    fastapi-offline were added): each direct pin taken out in turn is reported."""
    original = read_lock
    for req in extra_requirements(role):
        name = canonicalize_name(req.name)
        monkeypatch.setitem(globals(), "read_lock", lambda role, name=name: {
            k: v for k, v in original(role).items() if k != name})
        with pytest.raises(AssertionError, match=rf"{re.escape(req.name)} is not pinned"):
            test_lock_pins_each_requirement_of_the_extra_within_its_range(role)
        with pytest.raises(AssertionError, match=r"not pinned as direct: \[.+\].*make lock"):
            test_lock_has_nothing_the_extra_no_longer_asks_for(role)
