"""``floorsync enroll`` and ``floorsync revoke`` against a real mosquitto running the production
config's TLS listeners: an enrolled device (password or client certificate) connects and syncs
with the edge TOML it was given and the ACL block enroll added; after ``revoke`` and a SIGHUP it
is refused on its next connect. Enroll and revoke edit the broker's ACL file exactly: other
blocks, the central service's and the comments stay byte for byte.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTProtocolVersion

from floorsync import enroll
from floorsync.cli import main
from floorsync.edge import config as edge_config
from floorsync.edge import wire
from floorsync.edge.config import EdgeConfig
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer
from floorsync.server.ingest import MqttIngest
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.brokerkit import ACL, Peer, ProductionBroker, tls_context
from tests.factories import events
from tests.security.pki import TestCA

CENTRAL = ("floorsync-central", "central-pw")
NOT_AUTHORIZED = 0x87
PUBLISHED = {0x00, 0x10}  # MQTT 5 PUBACK: success, or success with no subscriber


@pytest.fixture
def site_ca(tmp_path: Path) -> TestCA:
    """The site CA as enroll expects it: ca.crt, ca.key (and an empty crl.pem) in one dir."""
    ca = TestCA.create(tmp_path / "ca", name="wh1 site CA")
    ca.crl([], path=ca.directory / "crl.pem")
    return ca


@pytest.fixture
def broker(tmp_path: Path, site_ca: TestCA) -> Iterator[ProductionBroker]:
    """The production config; its ACL (``broker.acl``) a copy of deploy's, mode 0640."""
    server = site_ca.server("broker")
    tls = ProductionBroker.build(tmp_path, passwords=dict([CENTRAL]), tls=(site_ca, server),
                                 crl=site_ca.directory / "crl.pem")
    os.chmod(tls.acl, 0o640)
    with tls:
        yield tls


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def reload(broker: ProductionBroker) -> None:
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)


def try_login(broker: ProductionBroker, url_port: int, ca: Path, *,
              login: tuple[str, str] | None = None,
              cert: tuple[Path, Path] | None = None) -> str:
    """One raw connection attempt over TLS: 'Success', a refusal reason, or 'closed'."""
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set_context(tls_context(ca, cert))
    if login is not None:
        client.username_pw_set(*login)
    result: list[str] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(str(rc))
    try:
        client.connect("localhost", url_port, 5)
        deadline = time.monotonic() + 5
        while not result and time.monotonic() < deadline:
            if client.loop(0.1) != 0:
                return "closed"
        return result[0] if result else "closed"
    except OSError as exc:
        return f"closed ({exc})"
    finally:
        client.disconnect()


def publish_code(port: int, ca: Path, topic: str, *, login: tuple[str, str] | None = None,
                 cert: tuple[Path, Path] | None = None) -> int:
    """Log in over TLS with MQTT 5, publish once at QoS 1: the PUBACK's reason code (0x87 when
    the ACL refuses)."""
    peer = Peer(port, login, tls=tls_context(ca, cert), name="pub")
    try:
        assert peer.connected.get(timeout=10) == 0
        return peer.publish(topic, b"probe")
    finally:
        peer.close()


def wait_login(expect_ok: bool, attempt: object, what: str) -> None:
    """After a SIGHUP: poll until the broker answers as expected (it reloads in its loop)."""
    deadline = time.monotonic() + 15
    last = ""
    while time.monotonic() < deadline:
        last = attempt()  # type: ignore[operator]
        if (last == "Success") == expect_ok:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: still {last!r} after 15 s")


@contextmanager
def central(broker: ProductionBroker, ca: Path, database: Path) -> Iterator[Store]:
    settings = Settings(database=database, broker=broker.tls_url, mqtt_ca_file=ca,
                        mqtt_username=CENTRAL[0], mqtt_password=CENTRAL[1],
                        client_id=f"floorsync-central-{uuid.uuid4().hex[:6]}")
    with Store(database) as store, MqttIngest(store, settings) as ingest:
        assert ingest.wait_ready(15), "central service did not connect"
        yield store


def syncs(config: EdgeConfig, directory: Path, store: Store, count: int = 50) -> None:
    with Outbox(directory / f"{uuid.uuid4().hex}.db") as outbox:
        outbox.add(events(count))
        before = store.summary()["events"]
        with Syncer(outbox, config.site, config.device, config.sync) as syncer:
            assert syncer.wait_synced(30), syncer.stats.last_error
    deadline = time.monotonic() + 10
    while store.summary()["events"] < before + count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.summary()["events"] == before + count


def refused(config: EdgeConfig, directory: Path) -> str:
    """The edge tries to connect (three times) and is refused; its events stay in the outbox."""
    with Outbox(directory / f"{uuid.uuid4().hex}.db") as outbox:
        outbox.add(events(3))
        syncer = Syncer(outbox, config.site, config.device, config.sync).start()
        try:
            deadline = time.monotonic() + 20
            while syncer.stats.connect_attempts < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert syncer.stats.connect_attempts >= 3 and syncer.stats.connects == 0
            error = syncer.stats.last_error or ""
        finally:
            syncer.stop()
        assert outbox.stats().backlog == 3
    return error


# --- the commands exist -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["enroll", "revoke"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"floorsync {command}" in out and "reload mosquitto" in out


# --- password enrollment ------------------------------------------------------------------------


def test_password_enrollment_syncs_and_revocation_refuses_the_next_connect(
    broker: ProductionBroker, site_ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "hh-9"
    code, text, err = run_cli(
        capsys, "enroll", "hh-9", "--site", "wh1", "--out", str(out),
        "--broker", broker.tls_url, "--passwd", str(broker.passwd),
        "--ca-file", str(site_ca.cert), "--device-dir", str(out), "--acl", str(broker.acl))
    assert code == 0, err
    password = next(line.split(": ", 1)[1] for line in text.splitlines()
                    if "password (shown once" in line)
    assert len(password) >= 32 and text.count(password) == 1
    assert f"ACL: its block added to {broker.acl}" in text and "reload mosquitto" in text
    assert broker.acl.read_text() == ACL.read_text() + "\n".join([
        "# floorsync enroll: hh-9",
        "user hh-9", "topic write floorsync/v1/wh1/hh-9/events",
        "topic write floorsync/v1/wh1/hh-9/status", "topic read floorsync/v1/wh1/hh-9/acks",
        "topic read floorsync/v1/wh1/docs/#", "", ""])
    assert "hh-9:" in broker.passwd.read_text() and password not in broker.passwd.read_text()
    toml = out / "edge.toml"
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600
    config = edge_config.load(toml)  # the edge's own loader takes it
    assert (config.site, config.device, config.sync.username) == ("wh1", "hh-9", "hh-9")
    assert config.sync.password == password and config.sync.ca_file == str(out / "ca.crt")

    def login() -> str:
        return try_login(broker, broker.tls_port, site_ca.cert, login=("hh-9", password))

    reload(broker)
    wait_login(True, login, "enrolled password after SIGHUP")
    with central(broker, site_ca.cert, tmp_path / "central.db") as store, Outbox(
        tmp_path / "connected.db"
    ) as outbox:
        syncs(config, tmp_path, store)
        connected = Syncer(outbox, config.site, config.device, config.sync).start()
        try:
            deadline = time.monotonic() + 15
            while not connected.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert connected.connected

            code, text, err = run_cli(capsys, "revoke", "hh-9", "--passwd", str(broker.passwd),
                                      "--ca-dir", str(site_ca.directory), "--acl", str(broker.acl))
            assert code == 0, err
            assert "password entry removed" in text and "reload mosquitto" in text
            assert "its ACL block (site wh1) removed" in text
            assert broker.acl.read_text() == ACL.read_text()
            assert "hh-9:" not in broker.passwd.read_text()
            reload(broker)
            wait_login(False, login, "revoked password after SIGHUP")
            # mosquitto drops the connection made with the removed password at the reload
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                connected.connected or not connected.stats.connect_attempts
            ):
                time.sleep(0.05)
            assert connected.stats.connects == 1 and "Not authorized" in (
                connected.stats.last_error or ""), connected.stats.last_error
        finally:
            connected.stop()
        error = refused(config, tmp_path)
        assert "Not authorized" in error, error
    # the password never reached a log line
    assert not [r for r in caplog.records if password in r.getMessage()]


# --- certificate enrollment -----------------------------------------------------------------


def test_certificate_enrollment_syncs_and_revocation_refuses_the_next_connect(
    broker: ProductionBroker, site_ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "dock-9"
    code, text, err = run_cli(
        capsys, "enroll", "dock-9", "--site", "wh1", "--cert", "--out", str(out),
        "--broker", broker.mtls_url, "--passwd", str(broker.passwd),
        "--ca-dir", str(site_ca.directory), "--device-dir", str(out), "--acl", str(broker.acl))
    assert code == 0, err
    assert "password (shown once" not in text and "CN dock-9" in text
    assert "reload mosquitto" in text
    assert stat.S_IMODE((out / "dock-9.key").stat().st_mode) == 0o600
    config = edge_config.load(out / "edge.toml")
    assert config.sync.username is None and config.sync.password is None
    assert config.sync.cert_file == str(out / "dock-9.crt")
    assert "dock-9" in (site_ca.directory / "issued.tsv").read_text()
    cert = (out / "dock-9.crt", out / "dock-9.key")

    def login() -> str:
        return try_login(broker, broker.mtls_port, site_ca.cert, cert=cert)

    assert login() == "Success"  # no reload needed to admit a new certificate of the CA
    # but its ACL block takes a reload: until then it may publish nothing
    own = wire.events_topic("wh1", "dock-9")
    assert publish_code(broker.mtls_port, site_ca.cert, own, cert=cert) == NOT_AUTHORIZED
    reload(broker)
    wait_login(True, lambda: "Success" if publish_code(
        broker.mtls_port, site_ca.cert, own, cert=cert) in PUBLISHED else "denied",
        "dock-9's ACL block after SIGHUP")
    with central(broker, site_ca.cert, tmp_path / "central.db") as store:
        syncs(config, tmp_path, store)

        code, text, err = run_cli(capsys, "revoke", "dock-9", "--passwd", str(broker.passwd),
                                  "--ca-dir", str(site_ca.directory), "--acl", str(broker.acl))
        assert code == 0, err
        assert "added to the CRL" in text and "ACL block" in text
        assert login() == "Success"  # mosquitto reads the CRL at start and on SIGHUP only
        reload(broker)
        wait_login(False, login, "revoked certificate after SIGHUP")
        error = refused(config, tmp_path)
        assert "closed the connection before accepting it" in error, error
        assert "revoked" in error, error  # the TLS alert names the reason

    # enrolling again after revocation issues a new certificate, which works
    code, text, err = run_cli(
        capsys, "enroll", "dock-9", "--site", "wh1", "--cert", "--out", str(tmp_path / "again"),
        "--broker", broker.mtls_url, "--passwd", str(broker.passwd),
        "--ca-dir", str(site_ca.directory), "--device-dir", str(tmp_path / "again"),
        "--acl", str(broker.acl))
    assert code == 0, err
    again = (tmp_path / "again" / "dock-9.crt", tmp_path / "again" / "dock-9.key")
    assert try_login(broker, broker.mtls_port, site_ca.cert, cert=again) == "Success"


def test_enroll_and_revoke_edit_the_acl_exactly_and_a_reload_applies_it(
    broker: ProductionBroker, site_ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acl, shipped = broker.acl, ACL.read_text()
    sites = {"hh-5": "wh1", "hh-6": "wh2", "hh-7": "wh1"}
    logins = {}
    for device, site in sites.items():
        out = tmp_path / device
        code, _, err = run_cli(capsys, "enroll", device, "--site", site, "--out", str(out),
                               "--passwd", str(broker.passwd), "--ca-dir",
                               str(site_ca.directory), "--acl", str(acl))
        assert code == 0, err
        assert not (out / "acl.txt").exists()  # the block is in the broker's ACL, not here
        password = edge_config.load(out / "edge.toml").sync.password
        assert password is not None
        logins[device] = (device, password)

    def blocks(*devices: str) -> str:
        return "".join(enroll.acl_entry(d, sites[d]) for d in devices)

    def code(device: str, site: str) -> int:
        return publish_code(broker.tls_port, site_ca.cert, wire.events_topic(site, device),
                            login=logins[device])

    # appended after the shipped file, which stays byte for byte (comments, central's block)
    assert acl.read_text() == shipped + blocks("hh-5", "hh-6", "hh-7")
    assert stat.S_IMODE(acl.stat().st_mode) == 0o640
    reload(broker)
    wait_login(True, lambda: try_login(broker, broker.tls_port, site_ca.cert,
                                       login=logins["hh-7"]), "enrolled devices after SIGHUP")
    assert {d: code(d, s) in PUBLISHED for d, s in sites.items()} == dict.fromkeys(sites, True)
    assert code("hh-6", "wh1") == NOT_AUTHORIZED  # its site only

    code_, text, err = run_cli(capsys, "revoke", "hh-5", "--passwd", str(broker.passwd),
                               "--ca-dir", str(site_ca.directory), "--acl", str(acl))
    assert code_ == 0, err
    assert "its ACL block (site wh1) removed" in text
    assert acl.read_text() == shipped + blocks("hh-6", "hh-7")
    # the block alone (hh-7 keeps its password): the ACL itself is what the reload applies
    removed = enroll.acl_remove(acl, "hh-7")
    assert removed is not None and (removed.device, removed.site) == ("hh-7", "wh1")
    assert acl.read_text() == shipped + blocks("hh-6")
    assert stat.S_IMODE(acl.stat().st_mode) == 0o640
    reload(broker)
    wait_login(False, lambda: try_login(broker, broker.tls_port, site_ca.cert,
                                        login=logins["hh-5"]), "revoked hh-5 after SIGHUP")
    assert code("hh-7", "wh1") == NOT_AUTHORIZED  # logs in, may do nothing
    assert code("hh-6", "wh2") in PUBLISHED  # the others still work

    for device in ("hh-6", "hh-7"):
        code_, _, err = run_cli(capsys, "revoke", device, "--passwd", str(broker.passwd),
                                "--ca-dir", str(site_ca.directory), "--acl", str(acl))
        assert code_ == 0, err
    assert acl.read_text() == shipped  # back to the shipped file, byte for byte
    assert not list(acl.parent.glob(f".{acl.name}.*"))  # no temporary file left


def test_acl_only_enrolls_an_existing_login(
    broker: ProductionBroker, site_ca: TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migrating a broker that used the old pattern rules: the device's login exists, only its
    block is added."""
    code, text, err = run_cli(capsys, "enroll", "hh-3", "--site", "wh2", "--acl-only",
                              "--acl", str(broker.acl), "--passwd", "/nonexistent/passwd")
    assert code == 0, err
    assert f"added the ACL block of hh-3 at wh2 to {broker.acl}" in text
    assert broker.acl.read_text() == ACL.read_text() + enroll.acl_entry("hh-3", "wh2")


# --- refusals -------------------------------------------------------------------------------


def test_enroll_and_revoke_refuse_with_a_message(
    tmp_path: Path, site_ca: TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    passwd = tmp_path / "passwd"
    acl = tmp_path / "floorsync.acl"
    hand_written = "user hh-8\ntopic write floorsync/v1/wh1/hh-8/events\n"
    acl.write_text(ACL.read_text() + hand_written)
    common = ("--passwd", str(passwd), "--ca-dir", str(site_ca.directory), "--acl", str(acl))
    ok = run_cli(capsys, "enroll", "hh-1", "--site", "wh1", "--out", str(tmp_path / "a"),
                 *common)
    assert ok[0] == 0, ok[2]
    edited = tmp_path / "edited.acl"
    edited.write_text(acl.read_text().replace("wh1/hh-1/acks", "+/hh-1/acks"))
    missing = str(tmp_path / "no.acl")
    cases = {
        ("enroll", "hh-1", "--site", "wh1", "--out", str(tmp_path / "b")): "already enrolled",
        ("enroll", "hh-1", "--site", "wh2", "--acl-only"): "already has a block in the ACL",
        ("enroll", "hh-8", "--site", "wh1", "--out", str(tmp_path / "h")): "hand-written",
        ("revoke", "hh-8"): "hand-written block for hh-8",
        ("enroll", "hh-2", "--site", "wh1", "--out", str(tmp_path / "e"), "--acl",
         str(edited)): "is not as floorsync enroll wrote it",
        ("revoke", "hh-1", "--acl", str(edited)): "is not as floorsync enroll wrote it",
        ("enroll", "hh-2", "--site", "wh1", "--out", str(tmp_path / "m"), "--acl",
         missing): "no ACL file",
        ("revoke", "hh-1", "--acl", missing): "no ACL file",
        # the credentials fail after the block was added: the block is taken out again
        ("enroll", "hh-2", "--site", "wh1", "--out", str(tmp_path / "r"), "--passwd",
         str(tmp_path / "no" / "passwd")): "mosquitto_passwd failed",
        ("enroll", "floorsync-central", "--site", "wh1"): "reserved",
        ("enroll", "docs", "--site", "wh1"): "reserved for the documents",
        ("enroll", "a/b", "--site", "wh1"): "device must be",
        ("enroll", "hh-2", "--site", "wh 1"): "site must be",
        ("revoke", "hh-404"): "not enrolled",
    }
    before = acl.read_text(), passwd.read_text()
    for argv, message in cases.items():
        code, _, err = run_cli(capsys, argv[0], *common, *argv[1:])  # the case's --acl last
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert err.startswith(f"floorsync {argv[0]}: ")
        assert (acl.read_text(), passwd.read_text()) == before, argv  # nothing changed
    for out in ("b", "h", "e", "m"):
        assert not (tmp_path / out).exists()
    code, _, err = run_cli(capsys, "enroll", "dock-1", "--site", "wh1", "--cert",
                           "--out", str(tmp_path / "c"), "--passwd", str(passwd),
                           "--ca-dir", str(tmp_path / "no-ca"))
    assert code == 2 and "cannot use the site CA" in err
    assert not (tmp_path / "c").exists()  # nothing written before the CA was checked
