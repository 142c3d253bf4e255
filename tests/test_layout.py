"""The shape of the project: who may import whom, an edge without the server, documented CLI."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from pathlib import Path

from floorsync.edge.cli import COMMANDS, build_parser
from floorsync.edge.localbroker import Mosquitto
from floorsync.edge.outbox import Outbox
from tests.e2e.conftest import central, wait_until
from tests.factories import events

ROOT = Path(__file__).resolve().parent.parent
OURS = ("edge", "server", "devices")
# The command line is the one composition root allowed to reach across packages (lazily).
COMPOSITION_ROOT = {"edge/cli.py", "edge/ledgerbench.py"}
ALLOWED = {
    "devices": set(),
    "edge": {"edge", "devices"},
    "server": {"server", "edge.wire"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    bare = {n for n in names if n.split(".")[0] in OURS}
    assert not bare, f"{path}: import {sorted(bare)} as floorsync.…"
    return {n.removeprefix("floorsync.") for n in names
            if n.startswith("floorsync.") and n.split(".")[1] in OURS}


def test_packages_import_only_what_the_design_allows() -> None:
    broken = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in COMPOSITION_ROOT:
                continue
            for name in _imports(path):
                top = name.split(".")[0]
                ok = top == package or any(
                    name == a or name.startswith(a + ".") for a in allowed
                )
                if not ok:
                    broken.append(f"{relative} imports {name}")
    assert broken == []


def test_wire_contract_uses_the_standard_library_only() -> None:
    tree = ast.parse((ROOT / "edge" / "wire.py").read_text())
    modules = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [n])  # type: ignore[attr-defined]
    }
    assert all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__" for m in modules)


BLOCK_SERVER = (
    "import sys\n"
    "for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic', 'amqtt', 'floorsync.server'):\n"
    "    sys.modules[m] = None  # importing any of these now raises ImportError\n"
    "from edge.cli import main\n"
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
