"""/docs and /redoc work on a network without internet: the pages name no other host, and every
asset they reference is served by the service itself (real uvicorn, real HTTP); a headless
Chromium that can resolve no host but 127.0.0.1 renders the operations from them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from floorsync.localbroker import free_port
from floorsync.server import apidocs
from floorsync.server.run import uvicorn_config
from floorsync.server.settings import Settings
from tests.server.helpers import TOKENS

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    """The central service on a free port, tokens on (the pages need none)."""
    settings = Settings(database=tmp_path / "ledger.db", broker=None, tokens=TOKENS,
                        http_host="127.0.0.1", http_port=free_port())
    server = uvicorn.Server(uvicorn_config(settings, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def referenced(html: str) -> list[str]:
    """Every URL a page loads: src=, href=, the spec (Swagger's url:, ReDoc's spec-url=)."""
    found = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html)
    found += re.findall(r"\burl: '([^']+)'", html)
    return found


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_names_no_other_host_and_its_assets_are_served(base: str, page: str) -> None:
    status, kind, body = get(base + page)
    html = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert not re.search(r"https?:|//[a-z]", html, re.I), html  # no host of any kind
    urls = referenced(html)
    assert "/openapi.json" in urls, urls
    assets = [u for u in urls if u.startswith(apidocs.ASSETS_URL + "/")]
    assert len(assets) >= 2, urls  # the script, and the icon (and Swagger's stylesheet)
    for url in assets:
        status, kind, body = get(base + url)
        assert status == 200, url
        assert kind.startswith(CONTENT_TYPES[Path(url).suffix]), (url, kind)
        assert len(body) > 1000, url
    status, kind, body = get(base + "/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")


def test_the_swagger_bundle_reads_openapi_3_1(base: str) -> None:
    """Swagger UI 4 shows "Unable to render this definition" for FastAPI's 3.1 document."""
    _, _, body = get(f"{base}{apidocs.ASSETS_URL}/swagger-ui-bundle.js")
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', body)
    assert version and int(version[1]) >= 5, version


def test_an_asset_that_is_not_there_is_a_404(base: str) -> None:
    for path in ("/docs/assets/nope.js", "/docs/assets/../../pyproject.toml"):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(base + path)
        assert info.value.code == 404, path


def test_a_missing_asset_is_a_start_up_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from floorsync.server.errors import ConfigError

    monkeypatch.setattr(apidocs, "ASSETS", (*apidocs.ASSETS, "not-shipped.js"))
    with pytest.raises(ConfigError, match=r"lacks not-shipped\.js"):
        apidocs.assets_directory()


# make test installs it (deploy/bootstrap.sh chromium): missing, these fail rather than skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.parametrize(("page", "rendered"), [
    ("/docs", r'class="opblock-summary-path"[^>]*>.*?/api/v1/stock'),
    ("/redoc", r"/api/v1/stock"),
])
def test_chromium_renders_the_operations_with_only_this_host(
        base: str, page: str, rendered: str, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "no chromium: run deploy/bootstrap.sh chromium (make test does)"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}",
         # any other host fails to resolve: what the page needs must come from the service
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=15000", "--dump-dom", base + page],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rendered, done.stdout, re.S), done.stdout[-3000:]
    assert "Unable to render" not in done.stdout
