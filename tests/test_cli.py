"""The `floorsync` command line, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

KEYS = {"kind", "gtin", "lot", "serial", "expiry", "quantity", "sscc", "gln", "epc", "error"}


def floorsync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorsync", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["]C10109501101530003172612311012345AB"],
         {"kind": "item", "gtin": "09501101530003", "lot": "12345AB", "expiry": "2026-12-31"}),
        (["]C1010950110153000310LOT1|21SER9", "--gs", "|"],
         {"kind": "item", "lot": "LOT1", "serial": "SER9"}),
        (["]C100106141412345678908"], {"kind": "container", "sscc": "106141412345678908"}),
        (["LOC:A-01-02"], {"kind": "location", "gtin": None}),
        (["CMD:PUTAWAY"], {"kind": "command"}),
        (["--epc", "3074257BF7194E4000001A85"],
         {"kind": "item", "gtin": "80614141123458", "serial": "6789",
          "epc": "urn:epc:id:sgtin:0614141.812345.6789"}),
        (["--epc", "3114257BF4499602D2000000"], {"kind": "container",
                                                   "sscc": "106141412345678908"}),
    ],
)
def test_decode_prints_one_json_object_with_the_fixed_keys(
    args: list[str], expected: dict[str, object]
) -> None:
    result = floorsync("decode", *args, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) >= KEYS
    assert {k: out[k] for k in expected} == expected
    assert out["error"] is None


@pytest.mark.parametrize(
    "args",
    [["]C10109501101530004"],  # wrong check digit
     ["%%%garbage"], ["]C1"], ["--epc", "ZZZZ"], ["--epc", "FF00000000000000000000"],
     ["--epc", ""]],
)
def test_decode_of_bad_input_is_unknown_with_a_reason_and_exit_1(args: list[str]) -> None:
    result = floorsync("decode", *args, "--json")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "unknown" and out["error"]


def test_decode_without_input_says_what_to_give() -> None:
    result = floorsync("decode")
    assert result.returncode == 2 and "--epc" in result.stderr


def test_devices_lists_without_failing() -> None:
    result = floorsync("devices", "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_config_errors_are_one_line_messages(tmp_path: object) -> None:
    result = floorsync("edge", "--site", "bad/site")
    assert result.returncode == 2
    assert result.stderr.startswith("floorsync edge: site must be")
    assert "Traceback" not in result.stderr


def test_server_refuses_a_database_it_cannot_serve_in_one_line(tmp_path: Path) -> None:
    """A database URL of a scheme we do not serve (taken as a file name it made a directory),
    a PostgreSQL server that is not there, and a database a newer floorsync migrated: one line
    naming why, exit 2, no traceback, no password, nothing created."""
    from floorsync.server.ledger import Store

    newer = tmp_path / "newer.db"
    with Store(newer):
        pass
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', '2027')")
    for db, why in (("mysql://floorsync:s3cret@db.example/floorsync", "mysql://"),
                    ("postgresql://floorsync:s3cret@127.0.0.1:1/floorsync",
                     "cannot open database postgresql://floorsync:***@127.0.0.1:1/floorsync"),
                    (str(newer), "newer than this floorsync")):
        result = subprocess.run(
            [sys.executable, "-m", "floorsync", "server", "--db", db, "--broker", "none",
             "--port", "0"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "FLOORSYNC_AUTH": "off"})
        assert result.returncode == 2, result.stderr
        assert why in result.stderr and "Traceback" not in result.stderr
        assert "s3cret" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("newer.db")) == []
