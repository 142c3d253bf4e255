"""The HTTP API over HTTPS, served by the real uvicorn with the options `serve` passes.

In-process (``uvicorn.Server`` on ``server.run.uvicorn_config``) for the TLS cases, and once
as ``floorsync server`` in its own process configured only by FLOORSYNC_* variables, as the
systemd unit runs it with deploy/examples/server.env.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from floorsync.localbroker import free_port
from floorsync.server.errors import ConfigError
from floorsync.server.run import uvicorn_config, uvicorn_options
from floorsync.server.settings import ENV_PREFIX, Settings
from tests.security.pki import Issued, TestCA

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


@pytest.fixture
def api_cert(ca: TestCA) -> Issued:
    return ca.server("api", hosts=("localhost", "127.0.0.1"))


def settings(tmp_path: Path, cert: Issued, **kwargs: Any) -> Settings:
    return Settings(database=tmp_path / "ledger.db", broker=None, auth=False,
                    http_host="127.0.0.1", http_port=free_port(), http_cert_file=cert.cert,
                    http_key_file=cert.key, **kwargs)


@contextmanager
def serving(config: Settings) -> Iterator[int]:
    server = uvicorn.Server(uvicorn_config(config, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield config.http_port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


def get_health(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> tuple[int, Any]:
    with urllib.request.urlopen(f"https://{host}:{port}/api/v1/health", timeout=10,
                                context=context) as response:
        return response.status, json.loads(response.read())


def test_health_over_https_to_a_verifying_client(tmp_path: Path, ca: TestCA,
                                                 api_cert: Issued) -> None:
    config = settings(tmp_path, api_cert)
    options = uvicorn_options(config)
    assert options["ssl_certfile"] == str(api_cert.cert) and "ssl_ca_certs" not in options
    with serving(config) as port:
        trusting = ssl.create_default_context(cafile=str(ca.cert))
        status, body = get_health(port, trusting)
        assert status == 200 and body["status"] == "ok" and body["database"] == "ok"
        assert get_health(port, trusting, host="localhost")[0] == 200
        # a client that does not trust the site CA refuses the service's certificate
        with pytest.raises(urllib.error.URLError) as info:
            get_health(port, ssl.create_default_context())
        assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
        # plain HTTP to the HTTPS port gets no answer in clear
        with pytest.raises((urllib.error.URLError, ConnectionError, http_errors())):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10)
        assert get_health(port, trusting)[0] == 200  # and the service is still there


def http_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_client_certificates_required_with_a_client_ca(tmp_path: Path, ca: TestCA,
                                                       api_cert: Issued) -> None:
    clients = TestCA.create(tmp_path / "clients", name="API clients CA")
    config = settings(tmp_path, api_cert, http_ca_file=clients.cert)
    assert uvicorn_options(config)["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    dashboard = clients.client("dashboard")
    stranger = TestCA.create(tmp_path / "stranger", name="Stranger CA").client("dashboard")
    with serving(config) as port:
        with_cert = ssl.create_default_context(cafile=str(ca.cert))
        with_cert.load_cert_chain(str(dashboard.cert), str(dashboard.key))
        assert get_health(port, with_cert)[0] == 200
        for presented in (None, stranger):
            context = ssl.create_default_context(cafile=str(ca.cert))
            if presented is not None:
                context.load_cert_chain(str(presented.cert), str(presented.key))
            # TLS 1.3: the refusal arrives after the client's half of the handshake
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                get_health(port, context)
        assert get_health(port, with_cert)[0] == 200


def test_https_settings_are_checked(tmp_path: Path, api_cert: Issued,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"database": tmp_path / "x.db", "broker": None, "auth": False}
    with pytest.raises(ConfigError, match="http_cert_file and http_key_file go together"):
        Settings(**base, http_cert_file=api_cert.cert)
    with pytest.raises(ConfigError, match=r"http_ca_file .* needs http_cert_file"):
        Settings(**base, http_ca_file=api_cert.cert)
    with pytest.raises(ConfigError, match="FLOORSYNC_HTTP_KEY_FILE: no such file"):
        Settings(**base, http_cert_file=api_cert.cert, http_key_file=tmp_path / "none.key")
    for name in ("HTTP_CERT_FILE", "HTTP_KEY_FILE", "HTTP_CA_FILE"):
        monkeypatch.delenv(ENV_PREFIX + name, raising=False)
    monkeypatch.setenv("FLOORSYNC_HTTP_CERT_FILE", str(api_cert.cert))
    monkeypatch.setenv("FLOORSYNC_HTTP_KEY_FILE", str(api_cert.key))
    monkeypatch.setenv("FLOORSYNC_HTTP_CA_FILE", "")
    loaded = Settings.from_env(database=tmp_path / "x.db", broker=None, auth=False)
    assert (loaded.http_cert_file, loaded.http_key_file, loaded.http_ca_file) == (
        api_cert.cert, api_cert.key, None)


def test_server_env_documents_the_https_settings() -> None:
    """The commented HTTPS lines of deploy/examples/server.env name Settings fields."""
    names = set()
    for line in (DEPLOY / "examples" / "server.env").read_text().splitlines():
        if line.startswith("#FLOORSYNC_HTTP_"):
            names.add(line[1:].partition("=")[0])
    fields = {ENV_PREFIX + f.upper() for f in ("http_cert_file", "http_key_file",
                                               "http_ca_file")}
    assert names >= fields
    assert all(hasattr(Settings(), n[len(ENV_PREFIX):].lower()) for n in names)


def test_floorsync_server_serves_https_from_its_environment(
    tmp_path: Path, ca: TestCA, api_cert: Issued
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {"FLOORSYNC_DATABASE": str(tmp_path / "ledger.db"), "FLOORSYNC_BROKER": "none",
            "FLOORSYNC_AUTH": "off", "FLOORSYNC_HTTP_HOST": "127.0.0.1",
            "FLOORSYNC_HTTP_PORT": str(port), "FLOORSYNC_HTTP_CERT_FILE": str(api_cert.cert),
            "FLOORSYNC_HTTP_KEY_FILE": str(api_cert.key)}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "floorsync", "server"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        trusting = ssl.create_default_context(cafile=str(ca.cert))
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                status, body = get_health(port, trusting)
                break
            except urllib.error.HTTPError:
                raise
            except (urllib.error.URLError, ConnectionError):  # not listening yet
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert status == 200 and body["status"] == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
