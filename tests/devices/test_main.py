"""The diagnostics command line: decode prints an Identity as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from floorsync.devices.__main__ import main
from floorsync.devices.sim import ScriptedScanner, open_pty


def test_decode_text_with_aim_and_gs_stand_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "]C10109501101530003|10ABC|3712", "--gs", "|"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["symbology"] == "]C1"
    assert out["identity"]["gtin"] == "09501101530003"
    assert (out["identity"]["lot"], out["identity"]["quantity"]) == ("ABC", 12)


def test_decode_epc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--epc", "3114257BF4499602D2000000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["sscc"]) == ("container", "106141412345678908")


def test_decode_garbage_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--epc", "nothex"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "unknown"


def test_serial_prints_live_reads_as_json_lines() -> None:
    master, path = open_pty()
    device = ScriptedScanner(master)
    proc = subprocess.Popen(
        [sys.executable, "-m", "floorsync.devices", "serial", path, "--suffix", "crlf"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert "online" in proc.stderr.readline()
        device.send(b"]C10109501101530003\r\n")
        line = json.loads(proc.stdout.readline())
        assert (line["symbology"], line["text"], line["error"]) == ("]C1", "0109501101530003", None)
        assert line["identity"]["gtin"] == "09501101530003"
        device.unplug()
        assert "offline" in proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        device.unplug()
