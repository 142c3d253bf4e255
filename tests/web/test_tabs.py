"""Fifty tabs of one browser on the dashboard: one live stream between them (a browser holds
six HTTP/1.1 connections to a server; fifty streams would starve it), every tab still live,
and another tab takes the stream over when the one holding it closes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import edge
from tests.web.conftest import Central
from tests.web.floor import dock_door, door_pass
from tests.web.test_dashboard import log_in

TABS = 50


@pytest.fixture
def central(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Central]:
    service = Central(tmp_path / "central.db", mosquitto.url)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def streams_opened(central: Central) -> int:
    return central.log.count("GET /dashboard/stream")


# In each tab: the wall-clock moment the pass's row appears (a MutationObserver, not polling).
WATCH = """id => { window.__seen = null; const feed = document.getElementById("passes");
  new MutationObserver((_, observer) => {
    if (feed.querySelector(`li[data-event="${id}"]`)) {
      window.__seen = Date.now(); observer.disconnect(); } })
  .observe(feed, { childList: true }); }"""


def arrivals(pages: list[Any], event_id: str, sent_ms: float) -> list[float]:
    """Seconds from ``sent_ms`` to the pass's row in each tab (after waiting for all)."""
    for page in pages:
        expect(page.locator(f'#passes li[data-event="{event_id}"]')).to_be_visible(
            timeout=15_000)
    return sorted((page.evaluate("window.__seen") - sent_ms) / 1000 for page in pages)


def test_fifty_tabs_share_one_stream_and_all_show_a_door_pass(
        central: Central, context: Any, mosquitto: Mosquitto, site: str, tmp_path: Path,
        shots: Any) -> None:
    door = dock_door("DOCK-A")
    with edge(tmp_path, site, "door-01", mosquitto.url) as (outbox, syncer):
        first = context.new_page()
        log_in(first, central, central.read_token)
        start = time.monotonic()
        pages = [first]
        for _ in range(TABS - 1):
            page = context.new_page()
            page.goto(central.base + "/")  # the session cookie: straight to the board
            pages.append(page)
        for page in pages:
            expect(page.locator(f'tr[data-device="{site}/door-01"]')).to_have_attribute(
                "data-online", "true", timeout=30_000)
            expect(page.locator("#link")).to_have_attribute("data-state", "live")
        opened = time.monotonic() - start
        assert streams_opened(central) == 1, central.log[-3000:]

        made = door_pass(door, 1)
        for page in pages:
            page.evaluate(WATCH, made.id)
        sent = time.time() * 1000
        outbox.add([made])
        syncer.notify()
        everywhere = arrivals(pages, made.id, sent)
        shots(pages[-1], "tab-50")

        # the tab holding the stream closes: another takes it over, the rest stay live
        first.close()
        made = door_pass(door, 2)
        for page in pages[1:]:
            page.evaluate(WATCH, made.id)
        sent = time.time() * 1000
        outbox.add([made])
        syncer.notify()
        handed_over = arrivals(pages[1:], made.id, sent)
        assert streams_opened(central) == 2, central.log[-3000:]
    print(f"\n{TABS} tabs: all live {opened:.1f} s after the first opened; a door pass, outbox"
          f" to row: median {everywhere[TABS // 2] * 1000:.0f} ms, last of {TABS} tabs"
          f" {everywhere[-1] * 1000:.0f} ms; after the stream's tab closed, last of"
          f" {TABS - 1} {handed_over[-1] * 1000:.0f} ms; streams opened: {streams_opened(central)}")
