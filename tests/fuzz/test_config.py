"""Configuration input: the edge's TOML file (edge/config.py `load`) and the central service's
environment (server/settings.py `Settings.from_env`).

Boundary: `load` raises only the edge's ConfigError and `from_env` only the server's
ConfigError, each with a reason, whatever the file or the variables hold. The TOML here is
written from generated tables (every known section and setting, any TOML value), and also cut
and spliced as text.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from floorsync.edge.config import EdgeConfig, PortalConfig, ScannerConfig, load
from floorsync.edge.errors import ConfigError as EdgeConfigError
from floorsync.edge.sync import SyncSettings
from floorsync.server.errors import ConfigError as ServerConfigError
from floorsync.server.settings import ENV_PREFIX, Settings

SECTIONS = {
    "outbox": ["path", "cap_mb", "retention_h"],
    "journal": ["dir", "cap_mb"],
    "workflow": ["location_prefixes", "location_patterns", "command_prefix",
                 "receipt_label_prefix", "order_label_prefix", "tote_label_prefix",
                 "pick_to"],
    "sync": [f for f in SyncSettings.__dataclass_fields__],
}
TOP = [f for f in EdgeConfig.__dataclass_fields__ if f not in ("sync", "scanners", "portals")]
SCANNER = list(ScannerConfig.__dataclass_fields__)
PORTAL = list(PortalConfig.__dataclass_fields__)

toml_scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
    st.sampled_from(["wh1", "hh-07", "mqtt://127.0.0.1:1883", "mqtts://h:8883", "cr", "wedge",
                     "us", "receive", "door", "auto", "in", "outside", "inside", "0614141",
                     "urn:epc:id:sgtin:*", "[A-Z", "sim", "replay", "5", "3.1.1", "(?P<x>"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["1", "2", "antenna", "role", "x"]), inner, max_size=2),
    max_leaves=5,
)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    return st.dictionaries(st.sampled_from([*keys, "bogus"]), toml_values, max_size=4)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(doc: dict[str, object]) -> str:
    out = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict | list)
           or k not in (*SECTIONS, "scanners", "portals")]
    for name in SECTIONS:
        if isinstance(doc.get(name), dict):
            out.append(f"[{name}]")
            out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc[name].items()]
    for name in ("scanners", "portals"):
        for entry in doc.get(name, []) if isinstance(doc.get(name), list) else []:
            out.append(f"[[{name}]]")
            out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(out) + "\n"


@st.composite
def config_docs(draw: st.DrawFn) -> dict[str, object]:
    doc: dict[str, object] = draw(table(TOP))
    doc.setdefault("site", "wh1")
    doc.setdefault("device", "hh-07")
    for name, keys in SECTIONS.items():
        if draw(st.booleans()):
            doc[name] = draw(table(keys))
    scanner = st.fixed_dictionaries({"name": st.just("hh-07"), "port": st.just("/dev/null")})
    portal = st.fixed_dictionaries({"name": st.just("door-01"), "location": st.just("DOCK-1")})
    doc["scanners"] = [{**base, **extra} for base, extra in draw(
        st.lists(st.tuples(scanner, table(SCANNER)), max_size=2))]
    doc["portals"] = [{**base, **extra} for base, extra in draw(
        st.lists(st.tuples(portal, table(PORTAL)), max_size=2))]
    return doc


def load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load(path)
        except EdgeConfigError as exc:
            assert str(exc).strip()
            return
    assert isinstance(config, EdgeConfig)


@given(config_docs())
# regressions: each raised TypeError, ValueError or RecursionError out of load()
@example({"site": "wh1", "device": "hh-07", "outbox": {"path": False}})
@example({"site": "wh1", "device": "hh-07", "location_patterns": False})
@example({"site": "wh1", "device": "hh-07", "journal_cap_mb": []})
@example({"site": "wh1", "device": "hh-07", "sync": {"broker": False}})
@example({"site": "wh1", "device": "hh-07", "sync": {"broker": "[A-Z"}})
@example({"site": "wh1", "device": "hh-07", "scanners": [{"name": "hh-07", "port": "p",
                                                          "suffix": [{}]}]})
@example({"site": "wh1", "device": "hh-07", "portals": [{"name": "d", "location": "L",
                                                         "stable_s": {}}]})
def test_edge_config_loads_or_says_why(doc: dict[str, object]) -> None:
    load_text(toml_text(doc))


GOOD = (Path(__file__).resolve().parents[2] / "deploy" / "examples" / "dock-door.toml").read_text()


@given(st.integers(0, len(GOOD)), st.integers(0, 40), st.text(max_size=20))
@example(0, 0, "a = " + "[" * 5000 + "\n")  # regression: RecursionError out of load()
def test_edge_config_text_cut_and_spliced(at: int, cut: int, insert: str) -> None:
    load_text(GOOD[:at] + insert + GOOD[at + cut:])


ENV_FIELDS = list(Settings.__dataclass_fields__)
env_values = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30),
    st.sampled_from(["", "none", "on", "off", "0", "1", "5", "3.1.1", "mqtt://h:1883",
                     "mqtt://h:99999", "http://x", "test-admin-token=admin", "a=b;c=d", "nan",
                     "1e999", "-1", "/nonexistent/tokens"]),
)


@given(st.dictionaries(st.sampled_from(ENV_FIELDS), env_values, max_size=5))
@example({"http_port": "99999999999999999999999"})
@example({"broker": "mqtt://["})  # regression (atheris): ValueError "Invalid IPv6 URL"
def test_server_env_parses_or_says_why(env: dict[str, str]) -> None:
    variables = {ENV_PREFIX + k.upper(): v for k, v in env.items()}
    variables.setdefault(ENV_PREFIX + "TOKENS", "fuzz-admin-token=admin")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with mock.patch.dict(os.environ, {**clean, **variables}, clear=True):
        try:
            settings = Settings.from_env()
        except ServerConfigError as exc:
            assert str(exc).strip()
            return
    assert isinstance(settings, Settings)
