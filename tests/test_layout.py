"""The shape of the project: who may import whom, an edge without the server, documented CLI."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from floorsync.cli import COMMANDS, build_parser
from floorsync.edge.outbox import Outbox
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import central, wait_until
from tests.factories import events

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("devices", "edge", "server")
# Who may import whom: devices <- edge <- server, and the server only the edge's wire contract
# (the messages, and the documents' expected lists sent to the floor).
# The composition root (the floorsync package's own modules: the command, the demo, the
# embedded broker, the cross-package benchmarks) may import anything; no package imports it.
ALLOWED = {
    "devices": {"devices"},
    "edge": {"edge", "devices"},
    "server": {"server", "edge.wire", "edge.expected"},
}


def _modules() -> dict[str, Path]:
    """Every module of ours by its installed name, found in the source folders."""
    found: dict[str, Path] = {}
    roots = [(ROOT / p, f"floorsync.{p}") for p in PACKAGES] + [(ROOT / "floorsync", "floorsync")]
    for folder, prefix in roots:
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if prefix == "floorsync" and parts[0] in PACKAGES:
                continue  # the symbolic links to the packages' folders
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((prefix, *parts))] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of ours that ``name`` imports anywhere in its file: at the top, inside
    functions, under ``TYPE_CHECKING``; a deferred import is still an edge of the graph."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            # ``from a import b``: module a.b if there is one, else the name b inside module a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            assert target.split(".")[0] not in PACKAGES, f"{path}: import {target} as floorsync.…"
            if target in MODULES and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _where(module: str) -> str:
    """``edge.portal`` for floorsync.edge.portal; ``floorsync`` for the composition root."""
    rest = module.removeprefix("floorsync.")
    return rest if rest.split(".")[0] in PACKAGES else "floorsync"


def test_packages_import_only_what_the_design_allows() -> None:
    broken = []
    for name, imported in sorted(GRAPH.items()):
        package = _where(name).split(".")[0]
        if package == "floorsync":
            continue
        for target in sorted(imported):
            where = _where(target)
            if not any(where == a or where.startswith(a + ".") for a in ALLOWED[package]):
                broken.append(f"{name} imports {target}")
    assert broken == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle_through_a_deferred_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_command_reaches_across_packages_only_lazily() -> None:
    """At module level, ``floorsync.cli`` imports only the error roots it reports."""
    tree = ast.parse(MODULES["floorsync.cli"].read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in top if m.startswith("floorsync")}
    assert ours <= {"floorsync.edge.errors"}


@pytest.mark.parametrize("module", ["wire.py", "expected.py"])
def test_wire_contract_uses_the_standard_library_only(module: str) -> None:
    tree = ast.parse((ROOT / "edge" / module).read_text())
    modules = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])  # type: ignore[attr-defined]
    }
    ours = {"floorsync.edge"}  # ``from floorsync.edge import wire``: the contract itself
    assert all(m.split(".")[0] in sys.stdlib_module_names or m in ("__future__", *ours)
               for m in modules)
    assert GRAPH[f"floorsync.edge.{module[:-3]}"] <= {"floorsync.edge.wire"}


BLOCK_SERVER = (
    "import sys\n"
    "for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic', 'amqtt', 'floorsync.server'):\n"
    "    sys.modules[m] = None  # importing any of these now raises ImportError\n"
    "from floorsync.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_edge_runs_without_the_server_dependencies(
    tmp_path: Path, mosquitto: Mosquitto, site: str
) -> None:
    """`floorsync edge` on a host with only the edge extra: FastAPI and friends unimportable."""
    outbox_path = tmp_path / "edge-outbox.db"
    with Outbox(outbox_path) as outbox:
        outbox.add(events(50))
    with central(tmp_path / "central.db", mosquitto.url) as store:
        process = subprocess.Popen(
            [sys.executable, "-c", BLOCK_SERVER, "edge", "--site", site, "--device", "edge-only",
             "--broker", mosquitto.url, "--outbox", str(outbox_path)],
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(lambda: store.summary()["events"] == 50 or process.poll() is not None,
                       30, "the edge-only agent to sync")
            applied = store.summary()["events"]
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err.decode()
    assert applied == 50
    assert b"ImportError" not in err and b"ModuleNotFoundError" not in err


def test_server_command_without_server_extra_says_what_to_install() -> None:
    result = subprocess.run(
        [sys.executable, "-c",
         BLOCK_SERVER.replace("'floorsync.server'", "'floorsync.server.run'"), "server"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 2
    assert b"floorsync[server]" in result.stderr


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert parser_commands == set(COMMANDS)
    missing = [c for c in COMMANDS if not re.search(rf"floorsync {c}\b", readme)]
    assert missing == []
