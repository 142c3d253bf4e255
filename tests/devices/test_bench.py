"""The bench runs with a tiny duration and returns positive rates; no speed is asserted."""

from __future__ import annotations

import importlib.util
import json

import pytest

from floorsync.devices import bench
from floorsync.devices.codes import interpret, interpret_epc


def test_run_returns_positive_rates() -> None:
    result = bench.run(0.05)
    for key in ("framing_frames_per_s", "interpret_codes_per_s", "interpret_epc_per_s"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    wedge = result["wedge_key_events_per_s"]
    if importlib.util.find_spec("floorsync.devices.keymap") is None:
        assert wedge is None
    else:
        assert wedge is None or wedge > 0
    json.dumps(result)  # JSON-ready


def test_the_mixes_hold_what_they_claim() -> None:
    kinds = {interpret(text, sym).kind for text, sym in bench.code_mix()}
    assert kinds == {"item", "container", "location", "command"}
    assert all(interpret(t, s).kind != "unknown" for t, s in bench.code_mix())
    assert {interpret_epc(e).kind for e in bench.epc_mix()} == {"item", "container", "location"}


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["0.02"]) == 0
    out = capsys.readouterr().out
    assert set(json.loads(out)) >= {"framing_frames_per_s", "wedge_key_events_per_s"}


def test_wedge_is_null_without_keymap(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.importlib.import_module

    def without_keymap(name: str, package: str | None = None) -> object:
        if name == "floorsync.devices.keymap":
            raise ModuleNotFoundError(name)
        return real(name, package)

    monkeypatch.setattr(bench.importlib, "import_module", without_keymap)
    assert bench.bench_wedge(0.01) is None
