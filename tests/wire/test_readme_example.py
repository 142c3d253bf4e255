"""The README's wire example, posted as it is printed to a running ``floorsync server``: every
event applied, no stock line below zero, no exception raised; sent again, all duplicates. The
example it replaced (a lone put-away out of an empty RECV-1) made a negative bin, shown here so
the check is seen to catch one."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floorsync.localbroker import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_batch() -> str:
    """The JSON block after "A batch" in README's "Wire format (v1)" section, as printed."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Wire format (v1)"):]
    after = section[section.index("\nA batch"):]
    return after.split("```json\n", 1)[1].split("```", 1)[0]


README_BATCH = readme_batch()
# The example before: one put-away from RECV-1, where nothing had been received.
OLD_BATCH = """\
{"v": 1, "site": "wh1", "device": "hh-07", "sent_at": "2026-11-22T09:30:00.512Z",
 "events": [
  {"id": "0193f4c2-7d1e-7a31-9c2b-5d0e1f2a3b4c", "seq": 1042,
   "time": "2026-11-22T10:29:58.120+01:00", "type": "putaway",
   "item": {"gtin": "09501101530003", "lot": "12345AB"},
   "qty": 1, "from": "RECV-1", "to": "A-01-02", "operator": "op-12",
   "read": {"kind": "barcode", "raw": "]C1010950110153000310123", "symbology": "]C1"}}]}
"""


class Central:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, path: str, body: str | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/v1/{path}", data=None if body is None else body.encode(),
            method="GET" if body is None else "POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    """``floorsync server`` on a fresh database, HTTP only."""
    port, token = free_port(), secrets.token_urlsafe(24)
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "floorsync", "server", "--db", str(tmp_path / "central.db"),
             "--broker", "none", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "FLOORSYNC_TOKENS": f"{token}=write", "FLOORSYNC_TOKENS_FILE": ""})
    central = Central(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                central.call("health")
                break
            except (OSError, urllib.error.URLError):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield central
    finally:
        process.terminate()
        process.wait(30)


def negatives(central: Central) -> list[dict[str, Any]]:
    return [r for r in central.call("stock")["items"] if r["quantity"] < 0]


def test_the_readme_example_applies_without_negative_stock(central: Central) -> None:
    ack = central.call("events", README_BATCH)
    assert [r["status"] for r in ack["results"]] == ["applied", "applied"], ack
    stock = {(r["location"], r["item"]): r["quantity"] for r in central.call("stock")["items"]}
    assert stock.get(("A-01-02", "09501101530003")) == 1, stock
    assert not negatives(central)
    raised = central.call("exceptions/summary")
    assert not any(sum(by_status.values()) for by_status in raised.values()), raised
    again = central.call("events", README_BATCH)
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"], again


def test_the_example_it_replaced_made_a_negative_bin(central: Central) -> None:
    ack = central.call("events", OLD_BATCH)
    assert [r["status"] for r in ack["results"]] == ["applied"], ack
    assert [(r["location"], r["quantity"]) for r in negatives(central)] == [("RECV-1", -1)]
    assert sum(central.call("exceptions/summary")["negative_stock"].values()) == 1
