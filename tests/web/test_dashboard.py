"""The dashboard in Debian's headless chromium, against ``floorsync server`` fed by a real edge
(outbox and syncer) over a real mosquitto: devices going offline, door passes as they happen,
exceptions resolved through the page, stock searched and paged by the server."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from floorsync.localbroker import Mosquitto
from floorsync.server.ledger import Store
from tests.e2e.conftest import edge
from tests.factories import event
from tests.web.conftest import Central
from tests.web.floor import dock_door, door_pass

DASH = "\N{EN DASH}"  # the page's "lines 1-50"


@pytest.fixture
def central(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Central]:
    service = Central(tmp_path / "central.db", mosquitto.url)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def log_in(page: Page, central: Central, token: str) -> None:
    page.goto(central.base + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#link")).to_have_attribute("data-state", "live", timeout=10_000)


def api(central: Central, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{central.api}/{path}", method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {central.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_log_in_refuses_unknown_tokens_and_a_device_goes_offline_when_its_edge_stops(
        central: Central, context: Any, mosquitto: Mosquitto, site: str, tmp_path: Path,
        shots: Any) -> None:
    page = context.new_page()
    page.goto(central.base + "/")
    page.fill("#token", "not-a-token-of-this-site")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("The server does not know this token.")
    expect(page.locator("#board")).to_be_hidden()

    log_in(page, central, central.read_token)
    expect(page.locator("#who")).to_contain_text("read only")
    row = page.locator(f'tr[data-device="{site}/hh-07"]')
    with edge(tmp_path, site, "hh-07", mosquitto.url) as (outbox, syncer):
        outbox.add([event(n, type="receive") for n in range(3)])
        syncer.notify(3)
        expect(row).to_have_attribute("data-online", "true", timeout=15_000)
        expect(row.locator("td").nth(5)).to_have_text("3", timeout=5_000)
        shots(page, "online")
    # the edge said offline (retained) as it stopped
    expect(row).to_have_attribute("data-online", "false", timeout=5_000)
    expect(row).to_contain_text("offline")
    shots(page, "offline")


def test_door_passes_appear_within_a_second(
        central: Central, context: Any, mosquitto: Mosquitto, site: str, tmp_path: Path,
        shots: Any) -> None:
    page = context.new_page()
    log_in(page, central, central.read_token)
    door = dock_door("DOCK-A")
    with edge(tmp_path, site, "door-01", mosquitto.url) as (outbox, syncer):
        expect(page.locator(f'tr[data-device="{site}/door-01"]')).to_have_attribute(
            "data-online", "true", timeout=15_000)
        seen: list[float] = []
        for serial in range(1, 7):
            made = door_pass(door, serial, inbound=serial % 3 != 0)
            start = time.monotonic()
            outbox.add([made])
            syncer.notify()
            item = page.locator(f'#passes li[data-event="{made.id}"]')
            expect(item).to_be_visible(timeout=1_000)  # the bound, each time
            seen.append(time.monotonic() - start)
            expect(item).to_contain_text("in → DOCK-A" if serial % 3 else "out ← DOCK-A")
            expect(item).to_contain_text(f"urn:epc:id:sgtin:0614141.812345.{serial}")
    print(f"\ndoor pass, outbox to page: median {statistics.median(seen) * 1000:.0f} ms,"
          f" max {max(seen) * 1000:.0f} ms over {len(seen)}")
    assert page.locator("#passes li[data-event]").count() == 6
    shots(page, "passes")


def test_an_exception_resolved_through_the_page_leaves_the_queue(
        central: Central, context: Any, mosquitto: Mosquitto, site: str, tmp_path: Path,
        shots: Any) -> None:
    page = context.new_page()
    log_in(page, central, central.read_token)
    with edge(tmp_path, site, "hh-07", mosquitto.url) as (outbox, syncer):
        # two picks of what no shelf holds: two negative-stock exceptions
        outbox.add([event(0, type="ship", from_="A-01-01", gtin="09501101530003"),
                    event(1, type="ship", from_="B-02-01", gtin="09501101530010")])
        syncer.notify(2)
        rows = page.locator("#exceptions tr[data-exception]")
        expect(rows).to_have_count(2, timeout=15_000)
    first = rows.filter(has_text="A-01-01")
    ident = first.get_attribute("data-exception")
    assert ident is not None

    # a read token may look but not resolve: the server refuses, the page says why
    first.get_by_role("button", name="Resolve").click()
    page.fill("tr[data-resolve] input[name=by]", "Ana")
    page.click("tr[data-resolve] button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("needs a write token")
    expect(page.locator(f'tr[data-exception="{ident}"]')).to_be_visible()
    assert api(central, f"exceptions/{ident}")["status"] == "open"
    shots(page, "refused")

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    log_in(page, central, central.write_token)
    page.locator(f'tr[data-exception="{ident}"]').get_by_role("button", name="Resolve").click()
    page.fill("tr[data-resolve] input[name=by]", "Ana")
    page.click("tr[data-resolve] button[type=submit]")
    expect(page.locator(f'tr[data-exception="{ident}"]')).to_have_count(0, timeout=2_000)
    expect(page.locator("#notice")).to_contain_text(f"#{ident} adjusted by Ana")
    resolved = api(central, f"exceptions/{ident}")
    assert resolved["status"] == "adjusted" and resolved["resolved_by"] == "Ana"
    assert resolved["resolved_token"] not in (None, central.write_token)  # its name, not it
    time.sleep(1.0)  # the stream's next snapshot agrees: still gone, the other one still open
    expect(page.locator(f'tr[data-exception="{ident}"]')).to_have_count(0)
    expect(page.locator("#exceptions-count")).to_have_text("1 open")

    # resolved elsewhere (the API): the page follows
    other = page.locator("#exceptions tr[data-exception]").first.get_attribute("data-exception")
    api(central, f"exceptions/{other}/resolve", {"action": "dismiss", "by": "Ben",
                                                 "reason": "found on B-02-02"})
    expect(page.locator(f'tr[data-exception="{other}"]')).to_have_count(0, timeout=3_000)
    expect(page.locator("#exceptions-count")).to_have_text("0 open")
    shots(page, "resolved")


def fill_stock(database: Path, items: int, locations: int) -> int:
    """``items`` x ``locations`` stock lines written straight into a migrated store."""
    with Store(database):
        pass
    conn = sqlite3.connect(database)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO stock (item, site, location, lot, quantity) VALUES (?, ?, ?, '', ?)",
                ((f"SKU-{i:06d}", "wh1", f"A-{loc:02d}", (i % 17) + 1)
                 for i in range(items) for loc in range(locations)))
        return int(conn.execute("SELECT COUNT(*) FROM stock").fetchone()[0])
    finally:
        conn.close()


def test_stock_is_searched_and_paged_by_the_server_over_a_million_lines(
        tmp_path: Path, mosquitto: Mosquitto, context: Any, shots: Any) -> None:
    database = tmp_path / "central.db"
    assert fill_stock(database, 100_000, 10) == 1_000_000
    central = Central(database, mosquitto.url)
    central.start()
    try:
        page = context.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/v1/stock" in r.url else None)
        log_in(page, central, central.read_token)
        rows = page.locator("#stock tr")
        expect(rows).to_have_count(50)  # the first page of everything, not a million rows
        expect(page.locator("#stock-range")).to_have_text(f"lines 1{DASH}50")

        timings = {}
        page.fill("#stock-item", "SKU-042424")
        start = time.monotonic()
        page.click("#stock-form button[type=submit]")
        expect(rows).to_have_count(10)
        expect(rows.first).to_contain_text("SKU-042424")
        timings["item"] = time.monotonic() - start
        expect(page.locator("#stock-next")).to_be_disabled()

        page.fill("#stock-item", "")
        page.fill("#stock-location", "A-07")
        start = time.monotonic()
        page.click("#stock-form button[type=submit]")
        expect(rows.first).to_contain_text("SKU-000000")
        timings["location"] = time.monotonic() - start
        for _ in range(2):
            page.click("#stock-next")
        expect(page.locator("#stock-range")).to_have_text(f"lines 101{DASH}150")
        expect(rows.first).to_contain_text("SKU-000100")
        assert rows.count() == 50
        assert all("A-07" in text for text in rows.all_inner_texts())
        page.click("#stock-prev")
        expect(page.locator("#stock-range")).to_have_text(f"lines 51{DASH}100")
        expect(rows.first).to_contain_text("SKU-000050")
        shots(page, "stock")
    finally:
        central.stop()
    # every page came from the server, 50 lines at a time, the filters in the query
    assert asked and all("limit=50" in url for url in asked)
    assert any("item=SKU-042424" in url for url in asked)
    assert sum("location=A-07" in url and "cursor=" in url for url in asked) == 3
    print("\nstock search over 1,000,000 lines: "
          + ", ".join(f"by {k} {v * 1000:.0f} ms" for k, v in timings.items()))


def test_every_panel_shows_what_the_service_holds(
        central: Central, context: Any, mosquitto: Mosquitto, tmp_path: Path,
        shots: Any) -> None:
    """A morning at wh1 through the page: the picture in the README is this test's."""
    site, today = "wh1", time.strftime("%Y-%m-%d")
    for sku, gtin, name in (("CASE-812345", "80614141123458", "case of tins"),
                            ("SOAP-01", "09501101530003", "hand soap 250 ml"),
                            ("SOAP-02", "09501101530010", "hand soap 500 ml")):
        api(central, "items", {"sku": sku, "gtins": [gtin], "description": name})
    api(central, "receipts", {"id": "ASN-1001", "site": site, "supplier": "Acme Foods",
                              "expected_date": today, "location": "DOCK-A",
                              "lines": [{"gtin": "80614141123458", "qty": 12}]})
    api(central, "orders", {"id": "SO-5001", "site": site, "ship_to": "Corner Shop, High St",
                            "due": today, "lines": [{"item": "SOAP-02", "qty": 5}]})
    page = context.new_page()
    log_in(page, central, central.write_token)
    door = dock_door("DOCK-A")
    with edge(tmp_path, site, "hh-07", mosquitto.url) as (handheld, hh_sync), \
            edge(tmp_path, site, "door-01", mosquitto.url) as (doors, door_sync):
        handheld.add([event(0, type="receive", to="A-01-01", qty=24),
                      event(1, type="ship", from_="B-02-01", gtin="09501101530010")])
        hh_sync.notify(2)
        for serial in (1, 2, 3):
            doors.add([door_pass(door, serial)])
            door_sync.notify()
        expect(page.locator("#passes li[data-event]")).to_have_count(3, timeout=15_000)
        expect(page.locator("#devices tr[data-online=true]")).to_have_count(2)
        count = api(central, "counts", {"site": site, "location": "A-01-01", "by": "Ana"})
        api(central, f"counts/{count['id']}/lines",
            {"lines": [{"item": "09501101530003", "lot": "L1", "qty": 22}]})
        api(central, f"counts/{count['id']}/close", {"by": "Ana"})  # posted: nothing moved
        counting = api(central, "counts", {"site": site, "location": "B-02-01", "by": "Ben"})

        expect(page.locator("#exceptions tr[data-exception]")).not_to_have_count(0)
        expect(page.locator("#receipts")).to_contain_text("ASN-1001", timeout=5_000)
        expect(page.locator("#orders")).to_contain_text("SO-5001")
        expect(page.locator("#backorders")).to_contain_text("SOAP-02")
        expect(page.locator(f'#counts tr[data-count="{count["id"]}"]')).to_contain_text(
            "1 differ: 09501101530003 (L1) -2")
        expect(page.locator(f'#counts tr[data-count="{counting["id"]}"]')).to_contain_text(
            "counting")
        expect(page.locator("#counts-count")).to_have_text("1 waiting")
        expect(page.locator("#backlog dd").first).to_contain_text("1 · oldest")  # ASN-1001
        expect(page.locator("#backlog dd").nth(3)).to_contain_text("1 · oldest")  # B-02-01
        expect(page.locator("#lag")).to_contain_text("sync lag")
        page.fill("#stock-location", "A-01-01")
        page.click("#stock-form button[type=submit]")
        expect(page.locator("#stock tr").first).to_contain_text("SOAP-01")
        page.wait_for_timeout(300)  # the flash of the newest passes fades
        shots(page, "board", full_page=True)
