"""The demo command end to end: separate processes, embedded broker, pty scanner, RFID door."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from floorsync.localbroker import free_port


def test_demo_runs_for_a_while_and_everything_captured_is_applied(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "floorsync", "demo", "--duration", "12", "--port", str(free_port()),
         "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(
        r"summary: captured (\d+), applied (\d+), pending (\d+), rejected (\d+)", result.stdout
    )
    assert summary, result.stdout
    captured, applied, pending, rejected = map(int, summary.groups())
    assert captured > 10
    assert (applied, pending, rejected) == (captured, 0, 0)
    assert "stock" in result.stdout
    # its own tokens, printed for a person to try the API with (the progress polls used them)
    read = re.search(r"read token: +(\S+)", result.stdout)
    write = re.search(r"write token: +(\S+)", result.stdout)
    assert read and write, result.stdout
    assert len(read[1]) >= 32 and len(write[1]) >= 32 and read[1] != write[1]
    assert f"Bearer {read[1]}" in result.stdout  # the curl line
    # the garbled scan got a bad read and nothing else broke
    assert "bad read" in (tmp_path / "hh-01.log").read_text()
    # both edges sent events: the handheld's receive/put-away/pick and the door's RFID receives
    assert "putaway" in (tmp_path / "hh-01.log").read_text()
    # master data was loaded, the pick from the empty bin raised one exception (not refused),
    # and the receipt closed short by the two cases that never came
    assert re.search(r"^exceptions: negative_stock 1 open; receipt_short 1 open$", result.stdout,
                     re.M), result.stdout
    assert ("receipt ASN-DEMO: expected 12, received 10, short 2; closed with 1 discrepancy"
            in result.stdout), result.stdout
    # the receipt reached the handheld's edge over the broker before the goods: the edge checked
    # the ten cases against its own copy (with no copy its check would say "unknown")
    with sqlite3.connect(tmp_path / "central.db") as db:
        checked = db.execute("SELECT doc_kind, doc_check, SUM(qty) FROM events"
                             " WHERE doc_id = 'ASN-DEMO' GROUP BY 1, 2").fetchall()
    assert checked == [("receipt", "expected", 10.0)]
    # the order placed before any stock: backordered, then filled by the door's receipts
    assert re.search(r"^order SO-DEMO line 1: backordered 3 \(no stock\), 3 filled by later"
                     r" receipts \(backorder filled\)$", result.stdout, re.M), result.stdout
