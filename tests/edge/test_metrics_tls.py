"""The edge agent's /metrics over HTTPS (``[metrics] cert_file``, ``key_file``,
``client_ca_file``): a real agent's endpoint answers a client with a certificate of the client
CA, and neither one without a certificate nor plain HTTP; the TOML keys are checked as loaded.
Certificates from tests/security/pki.py."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import EdgeConfig, MetricsSettings, load
from floorsync.edge.errors import ConfigError
from floorsync.edge.sync import SyncSettings
from floorsync.localbroker import free_port
from tests.security.pki import Issued, TestCA

DEAD_BROKER = f"mqtt://127.0.0.1:{free_port()}"


def get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        assert response.status == 200
        return str(response.read().decode())


def context(ca: TestCA, client: Issued | None) -> ssl.SSLContext:
    made = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        made.load_cert_chain(str(client.cert), str(client.key))
    return made


def test_https_with_client_certificates_only(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki")
    server = ca.server("edge-metrics")
    port = free_port()
    settings = MetricsSettings(port=port, cert_file=str(server.cert), key_file=str(server.key),
                               client_ca_file=str(ca.cert))
    config = EdgeConfig(site="wh1", device="edge-7", outbox_path=tmp_path / "outbox.db",
                        sync=SyncSettings(broker=DEAD_BROKER), metrics=settings).validate()
    url = f"https://localhost:{port}/metrics"
    with EdgeAgent(config):
        prometheus = context(ca, ca.client("prometheus"))
        assert "floorsync_edge_outbox_up" in get(url, prometheus)
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            get(url, context(ca, None))  # TLS 1.3: the refusal comes with the first read
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            get(url, context(TestCA.create(tmp_path / "other", name="Other CA"),
                             None))  # and the client checks the endpoint's certificate
        with pytest.raises(OSError) as plain:
            get(f"http://127.0.0.1:{port}/metrics")
        assert not isinstance(plain.value, urllib.error.HTTPError)  # no HTTP answer at all
        assert "floorsync_edge_outbox_up" in get(url, prometheus)  # still serving


def test_https_settings_from_toml(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki")
    server = ca.server("edge-metrics")
    path = tmp_path / "edge.toml"
    path.write_text(f'site = "wh1"\ndevice = "hh"\n[metrics]\nport = 9108\n'
                    f'cert_file = "{server.cert}"\nkey_file = "{server.key}"\n'
                    f'client_ca_file = "{ca.cert}"\n')
    got = load(path).metrics
    assert (got.cert_file, got.key_file, got.client_ca_file) == (
        str(server.cert), str(server.key), str(ca.cert))


@pytest.mark.parametrize(("keys", "error"), [
    ('cert_file = "CERT"', "cert_file and key_file go together"),
    ('key_file = "KEY"', "cert_file and key_file go together"),
    ('client_ca_file = "CA"', "client_ca_file .* needs cert_file"),
    ('cert_file = "/nonexistent.crt"\nkey_file = "KEY"', "cert_file '/nonexistent.crt': no such"),
    ('cert_file = "CERT"\nkey_file = "KEY"\nclient_ca_file = "/none/ca.crt"', "no such file"),
    ("cert_file = 7\nkey_file = 8", "cert_file must be"),
])
def test_bad_https_settings_are_refused(tmp_path: Path, keys: str, error: str) -> None:
    ca = TestCA.create(tmp_path / "pki")
    server = ca.server("edge-metrics")
    text = (keys.replace("CERT", str(server.cert)).replace("KEY", str(server.key))
            .replace('"CA"', f'"{ca.cert}"'))
    path = tmp_path / "edge.toml"
    path.write_text(f'site = "wh1"\ndevice = "hh"\n[metrics]\nport = 9108\n{text}\n')
    with pytest.raises(ConfigError, match=error):
        load(path)


def test_a_key_that_is_not_the_certificates_stops_the_start(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki")
    one, other = ca.server("one"), ca.server("other")
    settings = MetricsSettings(port=free_port(), cert_file=str(one.cert), key_file=str(other.key))
    agent = EdgeAgent(EdgeConfig(site="wh1", device="hh", outbox_path=tmp_path / "o.db",
                                 sync=SyncSettings(broker=DEAD_BROKER),
                                 metrics=settings).validate())
    with pytest.raises(ConfigError, match="cannot listen"):
        agent.start()
    agent.outbox.close()
