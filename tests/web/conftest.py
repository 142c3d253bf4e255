"""The dashboard's parts for tests: a real uvicorn (in this process or as ``floorsync server``),
headless Debian chromium driven by playwright's client, screenshots kept as artifacts.

Screenshots go to ``FLOORSYNC_ARTIFACTS`` (default ``artifacts/web`` at the repository's root,
ignored by git), one file per test and moment, so a CI run keeps what each page looked like.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from fastapi import FastAPI

from floorsync.localbroker import free_port
from floorsync.server import dashboard
from tests.e2e.conftest import CentralProcess

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FLOORSYNC_ARTIFACTS", ROOT / "artifacts")) / "web"
CHROMIUM = os.environ.get("FLOORSYNC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root on a host with a closed network: no sandbox, no GPU, no calls home; and no host but
# this one resolves, so anything the page would fetch from elsewhere (a CDN) fails visibly.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # fifty tabs are all "visible": no background throttling of their timers and rendering
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own (free of any loop this thread may hold)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@contextmanager
def live_server(app: FastAPI, log_level: str = "warning") -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port, in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        dashboard.close(app)  # as run.Server does on SIGTERM
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "uvicorn did not stop"


class Central(CentralProcess):
    """``floorsync server`` knowing a read, a write and an admin token."""

    def __init__(self, database: Path, broker: str) -> None:
        super().__init__(database, broker)
        self.read_token = secrets.token_urlsafe(24)
        self.write_token = secrets.token_urlsafe(24)
        self.tokens = (f"{self.token}=admin;{self.read_token}=read;"
                       f"{self.write_token}=write")
        self.base = f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.database.with_suffix(".log").read_text(errors="replace")


# Module-scoped: playwright's sync client keeps an event loop running in this thread while it
# lives, and asyncio.run (in later tests of the session) refuses to start beside one.
@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"no chromium at {CHROMIUM}: run 'sh deploy/bootstrap.sh chromium' (make test does)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Any) -> Iterator[Any]:
    """Debian's chromium, headless; never a browser playwright downloads."""
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile for one test: its own cookies, locks and channels."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Any:
    """``shots(page, "moment")`` saves a screenshot under ARTIFACTS/<test>/moment.png."""
    folder = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").strip("]")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, moment: str, **kwargs: Any) -> Path:
        path = folder / f"{moment}.png"
        page.screenshot(path=str(path), **kwargs)
        return path

    return take
