"""A replica's connection to NATS over TLS with a login, and its metrics over HTTPS, on real
parts: nats-server with a TLS client listener and an authorization block (certificates from
tests/security/pki.py), ``floorsync server --replica`` processes configured from the
environment only (FLOORSYNC_REPLICA, FLOORSYNC_NATS_*), real PostgreSQL, a real edge publishing
with its own login to the server's MQTT listener.

What is proven: a replica with the CA and a password file connects over TLS (the server's own
connection list says so) and applies and acks an edge's batch; a server certificate naming
another host is refused (nothing consumed, one ERROR line, still retrying); a wrong password is
one ERROR line, retried until the server takes it; a server that offers no TLS never sees the
password (the bytes are read by a relay in between); a server requiring client certificates
refuses a replica without one and takes one with one; the metrics answer over HTTPS with a
client certificate and not over plain HTTP or without one; they listen on loopback by default.
No secret appears in a log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.bench.cluster import nats_binary
from floorsync.chaos.cluster import ledger, mqtt_hello, wait_until
from floorsync.edge.errors import EdgeError
from floorsync.edge.outbox import Outbox
from floorsync.edge.sync import Syncer, SyncSettings
from floorsync.localbroker import free_port, wait_for_port
from floorsync.server.errors import ConfigError
from floorsync.server.replica import ReplicaSettings
from tests.factories import events
from tests.security.pki import Issued, TestCA

CENTRAL_PW = "central-pw-7QxZ3vK9"  # throw-away; the tests grep the logs for them
EDGE_PW = "edge-pw-Jm2Rt8Lw"
WRONG_PW = "wrong-pw-Hq5Nb1Yc"


@pytest.fixture(autouse=True)
def _nats_installed() -> None:
    try:
        nats_binary()
    except EdgeError as exc:
        pytest.fail(f"{exc}: the replica tests need nats-server (deploy/bootstrap.sh installs it)")


@pytest.fixture()
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


class TlsNats:
    """One nats-server: the client port with TLS (``cert``; with ``verify`` client certificates
    of ``ca`` required) or without, users ``central`` and ``dock-1``, JetStream, a plain MQTT
    listener for the edge and a monitoring port (its /connz tells a connection's TLS)."""

    def __init__(self, directory: Path, ca: TestCA, cert: Issued | None, *,
                 verify: bool = False, central_pw: str = CENTRAL_PW) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.ca, self.cert, self.verify = directory, ca, cert, verify
        self.port, self.mqtt_port, self.monitor_port = free_port(), free_port(), free_port()
        self.config = directory / "nats.conf"
        self.write(central_pw)
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, central_pw: str) -> None:
        tls = "" if self.cert is None else (
            "tls {\n"
            f'  cert_file: "{self.cert.cert}"\n  key_file: "{self.cert.key}"\n'
            f'  ca_file: "{self.ca.cert}"\n  verify: {"true" if self.verify else "false"}\n'
            "  timeout: 2\n}\n")
        self.config.write_text(
            f"server_name: tls-{self.port}\nlisten: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{\n  store_dir: "{self.directory / "js"}"\n}}\n'
            f"mqtt {{\n  listen: 127.0.0.1:{self.mqtt_port}\n}}\n{tls}"
            "authorization {\n  users = [\n"
            f'    {{user: central, password: "{central_pw}"}}\n'
            f'    {{user: dock-1, password: "{EDGE_PW}"}}\n  ]\n}}\n')

    def start(self) -> TlsNats:
        with open(self.directory / "nats.log", "ab") as out:
            self.process = subprocess.Popen([nats_binary(), "-c", str(self.config)],
                                            stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 20)
        wait_for_port(self.mqtt_port, 60)
        mqtt_hello_login(self.mqtt_port)  # the MQTT stream exists from the first connection
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def replica_connections(self) -> list[dict[str, object]]:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/connz?auth=1", timeout=5) as response:
            found = json.loads(response.read())
        return [c for c in found.get("connections") or [] if c.get("name") == "floorsync-replica"]


def mqtt_hello_login(port: int) -> None:
    """mqtt_hello with the edge's login (the server has an authorization block)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    deadline = time.monotonic() + 30
    while True:
        accepted = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hello-{port}",
                             protocol=mqtt.MQTTv311)
        client.username_pw_set("dock-1", EDGE_PW)
        client.on_connect = lambda _c, _u, _f, reason, _p, done=accepted: (
            None if reason.is_failure else done.set())
        with contextlib.suppress(OSError):
            client.connect("127.0.0.1", port)
            client.loop_start()
            if accepted.wait(5):
                client.disconnect()
                client.loop_stop()
                return
        client.disconnect()
        client.loop_stop()
        if time.monotonic() > deadline:
            raise AssertionError(f"NATS MQTT on port {port} accepted no login")
        time.sleep(0.5)


class ReplicaRun:
    """``floorsync server --replica --db URL``: URLs and login from the environment only."""

    def __init__(self, directory: Path, database: str, env: dict[str, str]) -> None:
        self.log = directory / f"replica-{free_port()}.log"
        self.argv = [sys.executable, "-m", "floorsync.cli", "server", "--replica", "--db",
                     database]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOORSYNC_")}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, env={**clean, **env}, stdout=out,
                                            stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        def there() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited: {self.text()[-3000:]}")
            return needle in self.text()
        wait_until(there, timeout, f"{needle!r} in the replica's log")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.text()


@contextlib.contextmanager
def replica(directory: Path, database: str, env: dict[str, str]) -> Iterator[ReplicaRun]:
    run = ReplicaRun(directory, database, env)
    try:
        yield run
    finally:
        run.stop()


@contextlib.contextmanager
def edge(directory: Path, site: str, mqtt_port: int) -> Iterator[Outbox]:
    with Outbox(directory / "dock-1-outbox.db") as outbox:
        syncer = Syncer(outbox, site, "dock-1", SyncSettings(
            broker=f"mqtt://127.0.0.1:{mqtt_port}", protocol="3.1.1", username="dock-1",
            password=EDGE_PW)).start()
        try:
            yield outbox
        finally:
            syncer.stop()


def login_env(tmp_path: Path, ca: TestCA, node: TlsNats, password: str = CENTRAL_PW,
              **more: str) -> dict[str, str]:
    secret = tmp_path / f"nats-password-{free_port()}"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {"FLOORSYNC_REPLICA": f"nats://localhost:{node.port}",
            "FLOORSYNC_NATS_CA_FILE": str(ca.cert), "FLOORSYNC_NATS_USER": "central",
            "FLOORSYNC_NATS_PASSWORD_FILE": str(secret), **more}


def no_secrets(text: str) -> None:
    for secret in (CENTRAL_PW, EDGE_PW, WRONG_PW):
        assert secret not in text, f"a password in the log:\n{text}"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


# --- the connection ---------------------------------------------------------------------------

def test_over_tls_with_a_password_file_a_batch_is_applied_and_acked(
        tmp_path: Path, ca: TestCA, pg_url: str, site: str) -> None:
    node = TlsNats(tmp_path / "nats", ca, ca.server("nats")).start()
    try:
        with replica(tmp_path, pg_url, login_env(tmp_path, ca, node)) as run:
            run.wait_for("replica consuming nats://localhost")
            (conn,) = node.replica_connections()
            assert conn["authorized_user"] == "central"
            assert str(conn["tls_version"]).startswith("1.")  # the server's word: TLS
            with edge(tmp_path, site, node.mqtt_port) as box:
                box.add(events(40))
                wait_until(lambda: box.stats().backlog == 0, 60, "the batch acked")
                assert box.stats().acked == 40
            text = run.stop()
        assert ledger(pg_url)["events"] == 40
        assert "connected to NATS localhost:" in text and " over TLS" in text
        assert error_lines(text) == []
        assert "eof_received" not in text
        no_secrets(text)
        assert CENTRAL_PW not in " ".join(run.argv)  # nothing secret on the command line
    finally:
        node.stop()


def test_a_server_certificate_for_another_host_is_refused(
        tmp_path: Path, ca: TestCA, pg_url: str, site: str) -> None:
    node = TlsNats(tmp_path / "nats", ca, ca.server("nats", hosts=("nats.elsewhere",))).start()
    try:
        with replica(tmp_path, pg_url, login_env(tmp_path, ca, node)) as run, \
                edge(tmp_path, site, node.mqtt_port) as box:
            box.add(events(10))
            run.wait_for("not trusted")
            time.sleep(3)  # ~6 more attempts at 0.5 s: still one line, still nothing consumed
            assert run.process.poll() is None, "the replica must keep trying"
            assert box.stats().backlog == 10
            assert node.replica_connections() == []
            text = run.stop()
        (line,) = error_lines(text)
        assert "Hostname mismatch" in line and "FLOORSYNC_NATS_CA_FILE" in line
        assert "retrying" in line
        assert ledger(pg_url)["events"] == 0
        no_secrets(text)
    finally:
        node.stop()


def test_a_wrong_password_is_one_line_and_retried_until_the_server_takes_it(
        tmp_path: Path, ca: TestCA, pg_url: str, site: str) -> None:
    node = TlsNats(tmp_path / "nats", ca, ca.server("nats"), central_pw=WRONG_PW + "x").start()
    try:
        with replica(tmp_path, pg_url, login_env(tmp_path, ca, node, WRONG_PW)) as run, \
                edge(tmp_path, site, node.mqtt_port) as box:
            box.add(events(10))
            run.wait_for("Authorization Violation")
            time.sleep(2)
            assert box.stats().backlog == 10
            (line,) = error_lines(run.text())
            assert "refused the login of user 'central'" in line
            assert "FLOORSYNC_NATS_PASSWORD" in line
            # the operator fixes the server's side (restarted: nats-server 2.9.10 panics
            # reloading an authorization block beside an MQTT listener); the replica goes on
            node.stop()
            node.write(WRONG_PW)
            node.start()
            wait_until(lambda: box.stats().backlog == 0, 60, "the batch acked after the fix")
            text = run.stop()
        assert ledger(pg_url)["events"] == 10
        no_secrets(text)
    finally:
        node.stop()


class Relay:
    """A TCP relay between the replica and a real server, keeping what the replica sent."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if keep:
                    self.sent += data
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_a_server_offering_no_tls_never_gets_the_password(
        tmp_path: Path, ca: TestCA, pg_url: str) -> None:
    """A downgrade: the URL reaches a plain server (here a real one, through a relay that
    keeps the replica's bytes). nats-py would send CONNECT with the password in clear; the
    replica configured for TLS refuses first."""
    node = TlsNats(tmp_path / "nats", ca, None).start()
    relay = Relay(node.port)
    try:
        env = login_env(tmp_path, ca, node)
        env["FLOORSYNC_REPLICA"] = f"nats://localhost:{relay.port}"
        with replica(tmp_path, pg_url, env) as run:
            run.wait_for("offered no TLS")
            wait_until(lambda: relay.connections >= 3, 30, "the replica trying again")
            text = run.stop()
        assert CENTRAL_PW.encode() not in relay.sent
        assert b"CONNECT" not in relay.sent
        (line,) = error_lines(text)
        assert "password was not sent" in line
        assert node.replica_connections() == []
    finally:
        relay.close()
        node.stop()


def test_client_certificates_required_by_the_server(
        tmp_path: Path, ca: TestCA, pg_url: str) -> None:
    node = TlsNats(tmp_path / "nats", ca, ca.server("nats"), verify=True).start()
    try:
        with replica(tmp_path, pg_url, login_env(tmp_path, ca, node)) as run:
            run.wait_for("FLOORSYNC_NATS_CERT_FILE")
            time.sleep(2)
            text = run.stop()
        (line,) = error_lines(text)
        assert "refused the connection" in line and "client certificates" in line
        central = ca.client("central")
        env = login_env(tmp_path, ca, node, FLOORSYNC_NATS_CERT_FILE=str(central.cert),
                        FLOORSYNC_NATS_KEY_FILE=str(central.key))
        with replica(tmp_path, pg_url, env) as run:
            run.wait_for("replica consuming")
            (conn,) = node.replica_connections()
            assert conn["authorized_user"] == "central"
            text = run.stop()
        assert error_lines(text) == []
        no_secrets(text)
    finally:
        node.stop()


# --- metrics ------------------------------------------------------------------------------------

def https_context(ca: TestCA, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def test_metrics_over_https_with_a_client_certificate_only(
        tmp_path: Path, ca: TestCA, pg_url: str) -> None:
    """No NATS server is needed: the metrics listen while the replica tries to connect."""
    port = free_port()
    server = ca.server("metrics")
    env = {"FLOORSYNC_REPLICA": f"nats://127.0.0.1:{free_port()}",
           "FLOORSYNC_METRICS_PORT": str(port), "FLOORSYNC_METRICS_CERT_FILE": str(server.cert),
           "FLOORSYNC_METRICS_KEY_FILE": str(server.key),
           "FLOORSYNC_METRICS_CLIENT_CA_FILE": str(ca.cert),
           "FLOORSYNC_HTTP_HOST": "0.0.0.0"}  # the HTTP service's: not the metrics' host
    with replica(tmp_path, pg_url, env) as run:
        run.wait_for(f"replica metrics on https://127.0.0.1:{port}/metrics")
        url = f"https://localhost:{port}/metrics"
        prometheus = https_context(ca, ca.client("prometheus"))
        assert "# HELP floorsync_events_total" in get(url, prometheus)
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            get(url, https_context(ca, None))  # TLS 1.3: refused with the first read
        with pytest.raises((ConnectionError, urllib.error.URLError, OSError)) as plain:
            get(f"http://127.0.0.1:{port}/metrics")
        assert not isinstance(plain.value, urllib.error.HTTPError)  # no HTTP answer at all
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((non_loopback_address(), port), timeout=5).close()
        assert "# HELP floorsync_events_total" in get(url, prometheus)  # still serving
        text = run.stop()
    no_secrets(text)
    assert "Traceback" not in text


def get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as got:
        assert got.status == 200
        return str(got.read().decode())


def non_loopback_address() -> str:
    """An address of this host that is not loopback (to show the metrics are not there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: a UDP connect picks the route
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.fail("this host has no address but loopback to test the metrics' binding on")
    return address


# --- settings -----------------------------------------------------------------------------------

def test_settings_from_the_environment(tmp_path: Path, ca: TestCA) -> None:
    secret = tmp_path / "pw"
    secret.write_text(CENTRAL_PW + "\n")
    found = ReplicaSettings.from_env(None, env={
        "FLOORSYNC_REPLICA": "nats://a:4222, tls://b",
        "FLOORSYNC_NATS_USER": "central", "FLOORSYNC_NATS_PASSWORD_FILE": str(secret),
        "FLOORSYNC_HTTP_HOST": "0.0.0.0"})
    assert found.servers == ("nats://a:4222", "tls://b:4222")
    assert found.login.password == CENTRAL_PW and found.login.user == "central"
    assert found.login.tls_required  # a tls:// URL
    assert found.metrics.host == "127.0.0.1"  # loopback, whatever the HTTP service's host
    assert CENTRAL_PW not in repr(found)
    # --replica's value first; a login in a URL is taken out of it
    moved = ReplicaSettings.from_env(f"nats://central:{CENTRAL_PW}@h1:4223", env={
        "FLOORSYNC_REPLICA": "nats://ignored:4222"})
    assert moved.servers == ("nats://h1:4223",)
    assert (moved.login.user, moved.login.password) == ("central", CENTRAL_PW)
    assert not moved.login.tls_required
    plain = ReplicaSettings.from_env("nats://h", env={"FLOORSYNC_NATS_CA_FILE": str(ca.cert)})
    assert plain.login.tls_required and plain.login.tls_context() is not None


@pytest.mark.parametrize(("env", "says"), [
    ({}, "FLOORSYNC_REPLICA"),
    ({"FLOORSYNC_REPLICA": "http://h"}, "nats://host:4222 or tls://"),
    ({"FLOORSYNC_REPLICA": f"nats://u:{CENTRAL_PW}@h,nats://v:other@h2"}, "different logins"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_NATS_USER": "central"}, "NATS_PASSWORD"),
    ({"FLOORSYNC_REPLICA": f"nats://u:{CENTRAL_PW}@h", "FLOORSYNC_NATS_USER": "central"},
     "both in the NATS URL"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_NATS_USER": "c",
      "FLOORSYNC_NATS_PASSWORD": CENTRAL_PW, "FLOORSYNC_NATS_PASSWORD_FILE": "CA"}, "give one"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_NATS_CA_FILE": "/nonexistent/ca.crt"},
     "FLOORSYNC_NATS_CA_FILE: no such file"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_NATS_CERT_FILE": "CA"}, "go together"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_NATS_CA_FILE": "KEY"}, "NATS TLS files"),
    ({"FLOORSYNC_REPLICA": "nats://h", "FLOORSYNC_METRICS_CLIENT_CA_FILE": "CA"},
     "METRICS_CERT_FILE"),
])
def test_settings_refused(ca: TestCA, env: dict[str, str], says: str) -> None:
    given = {k: {"CA": str(ca.cert), "KEY": str(ca.key)}.get(v, v) for k, v in env.items()}
    with pytest.raises(ConfigError, match=says) as refused:
        ReplicaSettings.from_env(None, env=given)
    assert CENTRAL_PW not in str(refused.value)


def test_a_url_password_stays_out_of_the_log(tmp_path: Path, pg_url: str) -> None:
    """--replica with a login in the URL still works (tests, old units), masked in the log."""
    port = free_port()
    argv = [sys.executable, "-m", "floorsync.cli", "server", "--replica",
            f"nats://central:{CENTRAL_PW}@127.0.0.1:{port}", "--db", pg_url]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOORSYNC_")}
    log = tmp_path / "replica.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=clean, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "cannot connect" in log.read_text(), 30, "a refused connection")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    text = log.read_text()
    assert "the NATS password goes to nats://127.0.0.1" in text  # warned: no TLS
    no_secrets(text)


def test_mqtt_hello_is_refused_without_the_login(tmp_path: Path, ca: TestCA) -> None:
    """The harness's own check: the authorization block is in force on the MQTT listener."""
    node = TlsNats(tmp_path / "nats", ca, ca.server("nats")).start()
    try:
        with pytest.raises(EdgeError):
            mqtt_hello(node.mqtt_port, timeout=2)
    finally:
        node.stop()
