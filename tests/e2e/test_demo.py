"""The demo command end to end: separate processes, embedded broker, pty scanner, RFID door."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from floorsync.demo import DOOR_GTIN
from floorsync.edge import status
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
    # no process of the demo logged an ERROR (the broker's readiness probe speaks MQTT: a bare
    # TCP probe made amqtt log "No data from client" at ERROR in broker.log)
    for log in sorted(tmp_path.glob("*.log")):
        errors = [ln for ln in log.read_text().splitlines() if " ERROR " in ln]
        assert not errors, (log.name, errors[:3])
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
    # then picked and shipped on the handheld against its copy, which had come over the broker:
    # the picks checked expected there, the ships matched centrally; the order closed (and, by
    # the exceptions line above, nothing went below zero and no pick was wrong)
    assert re.search(r"^order SO-DEMO: 3 picked, 3 shipped by hh-01 against it; closed$",
                     result.stdout, re.M), result.stdout
    with sqlite3.connect(tmp_path / "central.db") as db:
        floor = db.execute("SELECT type, device, from_location, doc_check, SUM(qty) FROM events"
                           " WHERE doc_kind = 'order' AND doc_id = 'SO-DEMO' GROUP BY 1, 2, 3, 4"
                           " ORDER BY 1").fetchall()
        (closed,) = db.execute("SELECT status FROM orders WHERE id = 'SO-DEMO'").fetchone()
    assert floor == [("pick", "hh-01", "DOCK-1", "expected", 3.0),
                     ("ship", "hh-01", "DOCK-1", None, 3.0)], floor
    assert closed == "closed"
    # the handheld stages its picks at the door (pick_to): the pick keeps the cases on the
    # books there and the ship takes them off once, so DOCK-1 holds what the door received
    # less the three shipped (before pick_to: three too low, the pick having taken them too)
    with sqlite3.connect(tmp_path / "central.db") as db:
        (received,) = db.execute(
            "SELECT SUM(qty) FROM events WHERE type = 'receive' AND device = 'dock-1'"
            " AND to_location = 'DOCK-1' AND gtin = ?", (DOOR_GTIN,)).fetchone()
        at_door = db.execute("SELECT item, lot, quantity FROM stock WHERE location = 'DOCK-1'"
                             " AND item = ?", (DOOR_GTIN,)).fetchall()
        (to,) = db.execute("SELECT DISTINCT to_location FROM events WHERE doc_id = 'SO-DEMO'"
                           " AND type = 'pick'").fetchall()
        twice = db.execute("SELECT COUNT(*) FROM exceptions WHERE kind = 'order_ship_off_books'"
                           ).fetchone()
    assert received >= 3 and to == ("DOCK-1",)
    assert at_door == [(DOOR_GTIN, "", received - 3)], (received, at_door)
    assert twice == (0,)


def closing_command(stdout: str) -> tuple[dict[str, str], list[str]]:
    """The command the demo's last lines give to serve its database again: (env, argv)."""
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("  FLOORSYNC_TOKENS=")]
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    return env, [w for w in words if not re.match(r"^[A-Z_]+=", w)]


def answers(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_demo_explains_its_negative_bin_and_ends_with_a_command_that_serves_it_again(
        tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "floorsync", "demo", "--duration", "12", "--port", str(port),
         "--data", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    read = re.search(r"read token: +(\S+)", result.stdout)
    assert read, result.stdout
    token = read[1]
    assert f"  live dashboard: http://127.0.0.1:{port}/ (log in with the read token)" in out
    # the explanation comes right after the first progress line where the bin is negative
    first = next(i for i, ln in enumerate(out) if re.search(r"A-01-03:\d+=-\d", ln))
    assert out[first].startswith("  applied ")
    assert re.match(r"  A-01-03:\d+=-\d+ is below zero on purpose: each round the operator"
                    r" picks one from A-01-03, a bin the ledger has empty", out[first + 1])
    assert "negative_stock exception" in out[first + 2]
    assert sum("below zero on purpose" in ln for ln in out) == 1  # once, not every round
    exceptions = out.index("exceptions: negative_stock 1 open; receipt_short 1 open")
    assert out[exceptions + 1].startswith("  negative_stock: the deliberate picks from the"
                                          " empty bin A-01-03")
    # stopped by --duration: nothing left running, and the last lines say so and how to look
    assert "still running" not in result.stdout
    assert out[-4].startswith("the demo has stopped; its databases and logs stay in")
    assert out[-2] == f"then open http://127.0.0.1:{port}/ (log in with the read token {token}), or"
    assert port_closed(port)
    env, argv = closing_command(result.stdout)
    assert env["FLOORSYNC_TOKENS"] == f"{token}=read"
    assert argv[argv.index("--db") + 1] == str(tmp_path / "central.db")
    served = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while port_closed(port):
            assert served.poll() is None and time.monotonic() < deadline, "it did not start"
            time.sleep(0.2)
        curl = shlex.split(out[-1])
        assert curl[:3] == ["curl", "-H", f"Authorization: Bearer {token}"]
        found = answers(curl[3], token)
        assert any(e["kind"] == "negative_stock" and "A-01-03" in json.dumps(e)
                   for e in found["items"]), found
    finally:
        served.terminate()
        served.wait(30)


def test_ctrl_c_stops_the_floor_and_keeps_the_central_service_until_ctrl_c_again(
        tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "floorsync", "demo", "--port", str(port), "--data", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []

    def until(text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = demo.stdout.readline() if demo.stdout else ""
            assert line, "".join(seen)
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in {''.join(seen)}")

    try:
        until("below zero on purpose")
        demo.send_signal(signal.SIGINT)
        until("press Ctrl-C again to stop it")
        text = "".join(seen)
        token = re.search(r"read token: +(\S+)", text)
        assert token, text
        assert (f"  live dashboard: http://127.0.0.1:{port}/ (log in with the read token"
                f" {token[1]})\n") in text
        assert re.search(r"^summary: captured (\d+), applied \1, pending 0, rejected 0", text,
                         re.M), text
        # the closing example answers: the central service runs, with what the floor did
        curl = shlex.split(seen[-2].removeprefix("  try: "))
        assert curl[:3] == ["curl", "-H", f"Authorization: Bearer {token[1]}"], seen[-2]
        assert any(e["kind"] == "negative_stock" for e in answers(curl[3], token[1])["items"])
        # the edges have stopped (each agent holds its sync lock while it runs)
        for device in ("hh-01", "dock-1"):
            assert not status.report(tmp_path / f"{device}-outbox.db", 1 << 30)[
                "agent"]["running"], device
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, "".join(seen) + rest
    assert port_closed(port)
    assert rest.startswith("the demo has stopped; its databases and logs stay in"), rest
    assert rest.splitlines()[1].startswith(f"  FLOORSYNC_TOKENS={token[1]}=read ")
