"""TLS between edges, the central service and the broker, on a real mosquitto running the
production config's TLS listeners (deploy/mosquitto/floorsync.conf) with the tests' own CA.

What is proven: an edge syncs over mqtts:// to a real central service that itself connects over
mqtts://; an edge refuses a broker whose certificate names another host or comes from another
CA, and says so in one log line (no traceback) while its outbox keeps the events; a wrong
password, or no (or a foreign) client certificate on the mutual-TLS listener, is refused; on
that listener the certificate's CN is the username the ACL sees.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from floorsync.edge import config as edge_config
from floorsync.edge import wire
from floorsync.edge.errors import ConfigError
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.server import errors as server_errors
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokerkit import Peer, ProductionBroker, conf_blocks, tls_context
from tests.e2e.conftest import wait_until
from tests.factories import events
from tests.security.pki import Issued, TestCA

CENTRAL = ("floorsync-central", "central-pw")
EDGE = ("hh-1", "hh-1-pw")
SITE = "wh1"


@dataclass
class Pki:
    ca: TestCA
    broker: Issued
    wrong_host: Issued  # signed by the CA, but for another host name
    other_ca: TestCA
    foreign: Issued  # a broker certificate of another CA, for localhost
    dock_a: Issued
    dock_b: Issued
    foreign_device: Issued  # a device certificate of another CA


@dataclass
class Setup:
    pki: Pki
    broker: ProductionBroker
    directory: Path

    @property
    def wrong_host_url(self) -> str:
        return f"mqtts://localhost:{self.broker.extra_ports[0]}"

    @property
    def other_ca_url(self) -> str:
        return f"mqtts://localhost:{self.broker.extra_ports[1]}"

    def sync(self, url: str, cert: Issued | None = None, **kw: Any) -> SyncSettings:
        """An edge's settings for ``url``, trusting the test CA, logged in as ``EDGE`` or (with
        ``cert``) presenting that certificate and no password; ``kw`` overrides."""
        values: dict[str, Any] = (
            {"cert_file": str(cert.cert), "key_file": str(cert.key)} if cert is not None
            else {"username": EDGE[0], "password": EDGE[1]})
        return SyncSettings(**{"broker": url, "ca_file": str(self.pki.ca.cert), **values, **kw})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("tls")
    ca = TestCA.create(root / "ca")
    other = TestCA.create(root / "other", name="Other CA")
    pki = Pki(
        ca=ca, broker=ca.server("broker"),
        wrong_host=ca.server("wrong-host", hosts=("elsewhere.example",)),
        other_ca=other, foreign=other.server("foreign"),
        dock_a=ca.client("dock-a"), dock_b=ca.client("dock-b"),
        foreign_device=other.client("dock-a"),
    )
    broker = ProductionBroker.build(
        root, passwords=dict([CENTRAL, EDGE]), tls=(ca, pki.broker),
        extra_listeners=[(pki.wrong_host, ca.cert), (pki.foreign, ca.cert)],
        devices={EDGE[0]: SITE, "dock-a": SITE, "dock-b": SITE},  # as floorsync enroll does
    )
    with broker:
        yield Setup(pki, broker, root)


def central_settings(setup: Setup, database: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        database=database, broker=setup.broker.tls_url, mqtt_ca_file=setup.pki.ca.cert,
        mqtt_username=CENTRAL[0], mqtt_password=CENTRAL[1],
        client_id=f"floorsync-central-{uuid.uuid4().hex[:6]}")
    values.update(kw)
    return Settings(**values)


# --- end to end -------------------------------------------------------------------------


def test_the_tls_blocks_of_the_production_config_are_complete() -> None:
    _, blocks = conf_blocks()
    tls, mtls = dict(blocks["tls"]), dict(blocks["mtls"])
    for block in (tls, mtls):
        assert {"listener", "cafile", "certfile", "keyfile"} <= set(block)
    assert tls["listener"] == "8883" and "require_certificate" not in tls
    assert mtls["require_certificate"] == "true" and mtls["use_identity_as_username"] == "true"
    assert "crlfile" in mtls


def sync_through(setup: Setup, tmp_path: Path, device: str, sync: SyncSettings,
                 count: int = 120) -> None:
    """``count`` events from a real outbox + syncer reach a real central service's ledger."""
    with Store(tmp_path / "central.db") as store:
        ingest = MqttIngest(store, central_settings(setup, tmp_path / "central.db")).start()
        try:
            assert ingest.wait_ready(15), "the central service did not connect over mqtts"
            with Outbox(tmp_path / "outbox.db") as outbox:
                outbox.add(events(count))
                with Syncer(outbox, SITE, device, sync) as syncer:
                    assert syncer.wait_synced(30), syncer.stats.last_error
                    assert syncer.stats.events_acked == count
            wait_until(lambda: store.summary()["events"] >= count, 10, "events applied")
            assert store.summary()["events"] == count
        finally:
            ingest.stop()


def test_edge_syncs_over_mqtts_with_ca_verification(setup: Setup, tmp_path: Path) -> None:
    sync_through(setup, tmp_path, EDGE[0], setup.sync(setup.broker.tls_url))


def test_edge_syncs_with_mutual_tls_and_no_password(setup: Setup, tmp_path: Path) -> None:
    sync_through(setup, tmp_path, "dock-a", setup.sync(setup.broker.mtls_url, setup.pki.dock_a))


# --- refusals, seen by the edge ---------------------------------------------------------


def refused(tmp_path: Path, sync: SyncSettings, caplog: pytest.LogCaptureFixture,
            device: str = "hh-1") -> tuple[str, list[logging.LogRecord]]:
    """Run a syncer until it has failed to connect three times; its events stay put."""
    caplog.set_level(logging.INFO, logger="floorsync.edge.sync")
    with Outbox(tmp_path / f"{uuid.uuid4().hex}.db") as outbox:
        outbox.add(events(5))
        syncer = Syncer(outbox, SITE, device, sync).start()
        try:
            wait_until(lambda: syncer.stats.connect_attempts >= 3, 20, "three failed attempts")
            assert not syncer.connected and syncer.stats.connects == 0
            assert syncer.state == "retrying"
            error = syncer.stats.last_error or ""
        finally:
            syncer.stop()
        assert outbox.stats().backlog == 5  # kept for when the broker is fixed
    records = [r for r in caplog.records if r.name == "floorsync.edge.sync"
               and r.levelno >= logging.WARNING]
    assert records and all(r.exc_info is None for r in records)  # no tracebacks
    retrying = [r for r in records if "retrying" in r.getMessage()]
    assert len(retrying) == 1  # logged once, not once per attempt
    return error, records


def test_edge_refuses_a_broker_certificate_for_another_host(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error, records = refused(tmp_path, setup.sync(setup.wrong_host_url), caplog)
    assert "not trusted" in error and "mismatch" in error.lower(), error
    assert records[0].levelno == logging.ERROR


def test_edge_refuses_a_broker_certificate_of_another_ca(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error, _ = refused(tmp_path, setup.sync(setup.other_ca_url), caplog)
    assert "not trusted" in error and "issuer" in error, error


def test_edge_without_the_ca_file_does_not_trust_a_private_ca(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No ca_file: the system's CAs, which do not include the site's own."""
    error, _ = refused(tmp_path, setup.sync(setup.broker.tls_url, ca_file=None), caplog)
    assert "not trusted" in error


def test_edge_with_a_wrong_password_is_refused_over_tls(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    error, _ = refused(tmp_path, setup.sync(setup.broker.tls_url, password="wrong"), caplog)
    assert "refused" in error and "authori" in error.lower(), error


def test_edge_without_a_client_certificate_is_refused_by_the_mtls_listener(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # even with a valid password: this listener wants a certificate
    error, records = refused(tmp_path, setup.sync(setup.broker.mtls_url), caplog)
    assert "closed the connection before accepting it" in error, error
    assert "certificate" in error
    assert records[0].levelno == logging.ERROR


def test_edge_with_a_certificate_of_another_ca_is_refused_by_the_mtls_listener(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sync = setup.sync(setup.broker.mtls_url, setup.pki.foreign_device)
    error, _ = refused(tmp_path, sync, caplog, device="dock-a")
    assert "closed the connection before accepting it" in error, error


# --- the certificate's CN is the username the ACL sees ------------------------------------


def test_mtls_certificate_cn_is_the_username_the_acl_sees(setup: Setup) -> None:
    ca, dock_a_cert = setup.pki.ca.cert, setup.pki.dock_a
    central = Peer(setup.broker.tls_port, CENTRAL, tls=tls_context(ca))
    # dock-a's certificate, claiming to be dock-b by username: the CN wins
    dock_a = Peer(setup.broker.mtls_port, ("dock-b", "x"),
                  tls=tls_context(ca, (dock_a_cert.cert, dock_a_cert.key)))
    try:
        assert central.connected.get(timeout=10) == 0
        assert dock_a.connected.get(timeout=10) == 0
        assert central.subscribe("floorsync/v1/+/+/events") == [1]
        dock_a.publish(wire.events_topic(SITE, "dock-b"), b"impersonating dock-b")
        dock_a.publish(wire.events_topic(SITE, "dock-a"), b"mine")
        assert central.drain() == [(wire.events_topic(SITE, "dock-a"), b"mine")]
        # and it reads dock-a's acks, not dock-b's
        dock_a.subscribe(wire.acks_topic(SITE, "dock-a"), wire.acks_topic(SITE, "dock-b"))
        central.publish(wire.acks_topic(SITE, "dock-b"), b"for b")
        central.publish(wire.acks_topic(SITE, "dock-a"), b"for a")
        assert dock_a.drain() == [(wire.acks_topic(SITE, "dock-a"), b"for a")]
    finally:
        central.close()
        dock_a.close()
    assert "u'dock-a'" in setup.broker.log()  # mosquitto logs the username it took


# --- the central service's side -----------------------------------------------------------


def test_central_refuses_an_untrusted_broker_and_logs_why(
    setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="floorsync.server.ingest")
    settings = central_settings(setup, tmp_path / "c.db", broker=setup.wrong_host_url)
    with Store(tmp_path / "c.db") as store:
        ingest = MqttIngest(store, settings).start()
        try:
            wait_until(lambda: any("not trusted" in r.getMessage() for r in caplog.records), 15,
                     "the ingest to log the untrusted broker")
            assert not ingest.connected
        finally:
            ingest.stop()
    lines = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(lines) == 1 and "mismatch" in lines[0].lower()  # once, however many retries


def test_central_with_a_client_certificate_on_the_mtls_listener(
    setup: Setup, tmp_path: Path
) -> None:
    """The central service may use mutual TLS too: its certificate's CN is its ACL user."""
    central_cert = setup.pki.ca.client("floorsync-central")
    settings = central_settings(setup, tmp_path / "c.db", broker=setup.broker.mtls_url,
                                mqtt_username=None, mqtt_password=None,
                                mqtt_cert_file=central_cert.cert, mqtt_key_file=central_cert.key)
    with Store(tmp_path / "c.db") as store, MqttIngest(store, settings) as ingest:
        assert ingest.wait_ready(15)  # subscribed: the ACL let floorsync-central read events


def test_central_tls_settings_from_the_environment(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "FLOORSYNC_BROKER": setup.broker.mtls_url,
        "FLOORSYNC_MQTT_CA_FILE": str(setup.pki.ca.cert),
        "FLOORSYNC_MQTT_CERT_FILE": str(setup.pki.dock_a.cert),
        "FLOORSYNC_MQTT_KEY_FILE": str(setup.pki.dock_a.key),
    }.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.mqtt_ca_file == setup.pki.ca.cert
    assert settings.mqtt_key_file == setup.pki.dock_a.key
    monkeypatch.setenv("FLOORSYNC_BROKER", "mqtt://127.0.0.1:1883")
    with pytest.raises(server_errors.ConfigError, match="not mqtts"):
        Settings.from_env()  # TLS files with a plain broker: refused, not ignored
    monkeypatch.setenv("FLOORSYNC_BROKER", setup.broker.tls_url)
    monkeypatch.setenv("FLOORSYNC_MQTT_CA_FILE", "/nonexistent/ca.crt")
    with pytest.raises(server_errors.ConfigError, match="no such file"):
        Settings.from_env()
    monkeypatch.delenv("FLOORSYNC_MQTT_KEY_FILE")
    monkeypatch.setenv("FLOORSYNC_MQTT_CA_FILE", str(setup.pki.ca.cert))
    with pytest.raises(server_errors.ConfigError, match="go together"):
        Settings.from_env()


def test_server_env_example_documents_the_tls_settings() -> None:
    """The commented TLS lines of deploy/examples/server.env name real settings."""
    import dataclasses

    from floorsync.server.settings import ENV_PREFIX

    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    text = (Path(__file__).resolve().parents[2] / "deploy/examples/server.env").read_text()
    commented = {line[1:].partition("=")[0] for line in text.splitlines()
                 if line.startswith("#FLOORSYNC_")}
    assert {"FLOORSYNC_MQTT_CA_FILE", "FLOORSYNC_MQTT_CERT_FILE",
            "FLOORSYNC_MQTT_KEY_FILE"} <= commented <= fields


def test_password_is_not_in_the_settings_repr() -> None:
    assert "s3cret-pw" not in repr(Settings(mqtt_username="u", mqtt_password="s3cret-pw"))
    assert "s3cret-pw" not in repr(SyncSettings(username="u", password="s3cret-pw"))


# --- the edge's TOML ----------------------------------------------------------------------


def test_edge_toml_tls_settings(setup: Setup, tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    pki = setup.pki
    toml.write_text(
        'site = "wh1"\ndevice = "dock-a"\n[sync]\n'
        f'broker = "{setup.broker.mtls_url}"\nca_file = "{pki.ca.cert}"\n'
        f'cert_file = "{pki.dock_a.cert}"\nkey_file = "{pki.dock_a.key}"\n'
    )
    config = edge_config.load(toml)
    assert config.sync.cert_file == str(pki.dock_a.cert)
    plain = tmp_path / "plain.toml"
    plain.write_text(toml.read_text().replace(setup.broker.mtls_url, "mqtt://central:1883"))
    with pytest.raises(ConfigError, match="plain MQTT"):
        edge_config.load(plain)
    half = tmp_path / "half.toml"
    half.write_text("\n".join(ln for ln in toml.read_text().splitlines()
                              if not ln.startswith("key_file")))
    with pytest.raises(ConfigError, match="go together"):
        edge_config.load(half)


def test_edge_with_an_unreadable_tls_file_gets_a_config_error(tmp_path: Path) -> None:
    sync = SyncSettings(broker="mqtts://localhost:8883", ca_file=str(tmp_path / "missing.crt"))
    with Outbox(tmp_path / "o.db") as outbox, pytest.raises(
        ConfigError, match=r"cannot use the TLS files \(ca_file"
    ):
        Syncer(outbox, SITE, "hh-1", sync)
