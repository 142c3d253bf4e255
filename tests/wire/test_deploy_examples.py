"""The files under deploy/: example edge configs load, units and env match the code, and the
production mosquitto config runs on a real mosquitto with its ACL keeping devices apart."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTProtocolVersion

from floorsync import enroll
from floorsync.cli import build_parser
from floorsync.edge import config as edge_config
from floorsync.edge import expected, wire
from floorsync.edge.errors import ConfigError
from floorsync.localbroker import Mosquitto
from floorsync.server.settings import ENV_PREFIX, Settings
from tests.brokerkit import Peer, ProductionBroker, conf_blocks
from tests.deploy.conftest import unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = ("handheld.toml", "dock-door.toml")
ENROLLED_HH07 = {  # what floorsync enroll hh-07 --site wh1 adds to the ACL
    ("write", "floorsync/v1/wh1/hh-07/events"),
    ("write", "floorsync/v1/wh1/hh-07/status"),
    ("read", "floorsync/v1/wh1/hh-07/acks"),
    ("read", "floorsync/v1/wh1/docs/#"),
}
CENTRAL_TOPICS = {
    ("read", "floorsync/v1/+/+/events"),
    ("read", "floorsync/v1/+/+/status"),
    ("write", "floorsync/v1/+/+/acks"),
    ("readwrite", "floorsync/v1/+/docs/#"),
}


# --- edge examples ----------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_edge_example_loads_and_validates(name: str) -> None:
    config = edge_config.load(DEPLOY / "examples" / name)
    assert config.validate() is config
    assert config.site == "wh1"
    # the outbox lives in the unit's StateDirectory, the only place the agent may write
    assert config.outbox_path.parent == Path("/var/lib/floorsync")
    # the device logs in to the broker as itself: its ACL block is under its device name
    assert config.sync.username == config.device and config.sync.password
    assert wire.events_topic(config.site, config.device).split("/")[3] == config.sync.username
    if name == "handheld.toml":
        assert [s.mode for s in config.scanners] == ["receive"] and config.portals == ()
        assert config.scanners[0].port.startswith("/dev/serial/by-id/")
    else:
        assert config.scanners == () and [p.location for p in config.portals] == ["DOCK-1"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_edge_example_with_a_typo_is_refused(name: str, tmp_path: Path) -> None:
    """The examples are checked by a loader that does refuse things (not a no-op)."""
    text = (DEPLOY / "examples" / name).read_text()
    bad = tmp_path / name
    bad.write_text(text.replace("[sync]\n", "[sync]\nbrokr = \"x\"\n", 1))
    with pytest.raises(ConfigError, match="brokr"):
        edge_config.load(bad)


# --- systemd units and the server's environment -----------------------------------------


def test_edge_unit() -> None:
    u = unit("floorsync-edge.service")
    argv = shlex.split(u["ExecStart"][0])
    assert argv[0] == "/opt/floorsync/venv/bin/floorsync"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "edge" and args.config == Path("/etc/floorsync/edge.toml")
    assert u["Restart"] == ["always"] and u["RestartSec"] == ["1"]
    assert u["User"] == ["floorsync"] and u["StateDirectory"] == ["floorsync"]
    assert set(u["SupplementaryGroups"][0].split()) >= {"dialout", "input"}
    assert u["ProtectSystem"] == ["strict"] and u["NoNewPrivileges"] == ["yes"]
    # /dev must stay visible for the scanners
    assert "PrivateDevices" not in u and "char-ttyUSB rw" in u["DeviceAllow"]


def test_server_unit_and_env_file() -> None:
    u = unit("floorsync-server.service")
    argv = shlex.split(u["ExecStart"][0])
    assert argv[0] == "/opt/floorsync/venv/bin/floorsync"
    assert build_parser().parse_args(argv[1:]).command == "server"
    assert u["EnvironmentFile"] == ["/etc/floorsync/server.env"]
    assert u["User"] == ["floorsync"] and u["StateDirectory"] == ["floorsync"]
    assert u["Restart"] == ["always"]


def test_server_env_names_are_settings_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {}
    for line in (DEPLOY / "examples" / "server.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    assert set(env) <= fields
    assert {"FLOORSYNC_DATABASE", "FLOORSYNC_BROKER", "FLOORSYNC_HTTP_HOST",
            "FLOORSYNC_HTTP_PORT"} <= set(env)
    for key in fields:
        monkeypatch.delenv(key, raising=False)
    tokens = tmp_path / "tokens"  # the example names /etc/floorsync/tokens; here a copy of it
    tokens.write_text("# name hash scopes\n"  # as floorsync token new prints them
                      f"dashboard sha256:{'1' * 64} read\n"
                      f"edge-http sha256:{'2' * 64} write\n")
    env["FLOORSYNC_TOKENS_FILE"] = str(tokens)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    assert settings.tokens_file == tokens and len(settings.tokens) == 2
    assert settings.database == Path("/var/lib/floorsync/floorsync.db")
    assert settings.broker == "mqtt://127.0.0.1:1883"
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8000)
    assert settings.client_id == "floorsync-central"


# --- mosquitto --------------------------------------------------------------------------


def acl_rules(path: Path = DEPLOY / "mosquitto" / "floorsync.acl",
              ) -> dict[str | None, set[tuple[str, str]]]:
    """The ACL file as {None: patterns, user: topics}."""
    rules: dict[str | None, set[tuple[str, str]]] = {None: set()}
    user: str | None = None
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            rules[user] = set()
        elif words[0] == "pattern":
            rules[None].add((words[1], words[2]))
        elif words[0] == "topic":
            rules[user].add((words[1], words[2]))
        else:
            raise AssertionError(f"unexpected ACL line {line!r}")
    return rules


def test_acl_has_only_the_central_block_and_enroll_adds_each_device(tmp_path: Path) -> None:
    """No pattern rules: a device's rights are its own block, added by floorsync enroll, on its
    username and pinned to its site."""
    rules = acl_rules()
    assert rules == {None: set(), "floorsync-central": CENTRAL_TOPICS}
    # the central service's client id is the ACL's user name
    assert Settings().client_id == "floorsync-central"
    acl = tmp_path / "floorsync.acl"
    shutil.copyfile(DEPLOY / "mosquitto" / "floorsync.acl", acl)
    enroll.acl_add(acl, "hh-07", "wh1")
    assert acl_rules(acl) == {None: set(), "floorsync-central": CENTRAL_TOPICS,
                              "hh-07": ENROLLED_HH07}


def test_broker_config_settings() -> None:
    conf = dict(conf_blocks()[0])
    assert conf["allow_anonymous"] == "false"
    assert conf["persistence"] == "true" and conf["persistence_location"].endswith("/")
    assert conf["set_tcp_nodelay"] == "true"
    assert int(conf["max_queued_messages"]) >= 100_000
    assert int(conf["max_packet_size"]) > wire.MAX_PAYLOAD_BYTES
    assert conf["acl_file"].endswith("floorsync.acl") and "password_file" in conf
    assert "persistent_client_expiration" in conf


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """deploy/mosquitto/floorsync.conf on a real mosquitto, only its paths and port moved; the
    ACL a copy of deploy's with hh-07's and hh-08's blocks (wh1) added as enroll adds them."""
    users = {"hh-07": "pw-07", "hh-08": "pw-08", "floorsync-central": "pw-central"}
    with ProductionBroker.build(tmp_path, users, {"hh-07": "wh1", "hh-08": "wh1"}) as broker:
        yield broker


def test_production_config_runs_and_acl_keeps_devices_apart(
    production_broker: Mosquitto,
) -> None:
    port = production_broker.port
    central = Peer(port, ("floorsync-central", "pw-central"))
    hh07 = Peer(port, ("hh-07", "pw-07"))
    stranger = Peer(port, ("hh-07", "wrong"))
    try:
        assert central.connected.get(timeout=10) == 0
        assert hh07.connected.get(timeout=10) == 0
        assert stranger.connected.get(timeout=10) != 0  # bad password: refused

        # the ingest's subscriptions are granted at QoS 1
        assert central.subscribe("floorsync/v1/+/+/events", "floorsync/v1/+/+/status") == [1, 1]
        # a device may read its own acks only; mosquitto grants any subscription and applies
        # the ACL's read rules when it delivers, so what counts is what arrives (below)
        assert hh07.subscribe(wire.acks_topic("wh1", "hh-07")) == [1]
        hh07.subscribe(wire.acks_topic("wh1", "hh-08"), "floorsync/v1/+/+/events")

        hh07.publish(wire.events_topic("wh1", "hh-07"), b"mine")
        hh07.publish(wire.status_topic("wh1", "hh-07"), b"online")
        hh07.publish(wire.events_topic("wh1", "hh-08"), b"impersonating hh-08")
        hh07.publish(wire.acks_topic("wh1", "hh-07"), b"forged ack")
        assert sorted(central.drain()) == [
            (wire.events_topic("wh1", "hh-07"), b"mine"),
            (wire.status_topic("wh1", "hh-07"), b"online"),
        ]

        central.publish(wire.acks_topic("wh1", "hh-07"), b"ack for hh-07")
        central.publish(wire.acks_topic("wh1", "hh-08"), b"ack for hh-08")
        assert hh07.drain() == [(wire.acks_topic("wh1", "hh-07"), b"ack for hh-07")]

        # the documents: the central service publishes them retained, edges read them; an edge
        # cannot publish one (its message never reaches a reader)
        docs = expected.docs_topic("wh1", "receipt", "ASN-1")
        assert central.subscribe(expected.docs_filter("wh1")) == [1]
        central.publish(docs, b"the list", retain=True)
        hh07.publish(expected.docs_topic("wh1", "receipt", "FORGED"), b"forged list")
        assert central.drain() == [(docs, b"the list")]
        assert hh07.subscribe(expected.docs_filter("wh1")) == [1]
        assert hh07.drain() == [(docs, b"the list")]  # retained: there before it subscribed
    finally:
        for peer in (central, hh07, stranger):
            peer.close()


def test_shared_subscription_is_allowed_for_central(production_broker: Mosquitto) -> None:
    """FLOORSYNC_SHARED_GROUP makes the ingest subscribe with $share/<group>/..."""
    central = Peer(production_broker.port, ("floorsync-central", "pw-central"))
    hh07 = Peer(production_broker.port, ("hh-07", "pw-07"))
    try:
        assert central.connected.get(timeout=10) == 0 and hh07.connected.get(timeout=10) == 0
        assert central.subscribe("$share/central/floorsync/v1/+/+/events") == [1]
        hh07.publish(wire.events_topic("wh1", "hh-07"), b"shared")
        assert central.drain() == [(wire.events_topic("wh1", "hh-07"), b"shared")]
    finally:
        central.close()
        hh07.close()



def test_reader_broker_config_keeps_acknowledged_reads_through_a_crash(tmp_path: Path) -> None:
    """deploy/mosquitto/reader-broker.conf on a real mosquitto: reads it PUBACKed to a reader
    while the edge was away are delivered to the edge's session after a SIGKILL and restart."""
    import signal

    from tests.devices.rfid.readerbroker import reader_broker

    # the plain loopback listener only (the TLS one: tests/devices/rfid/test_mqtt_reader_tls.py)
    broker, _ = reader_broker(tmp_path / "broker", {"zebra-1": "pw", "edge-1": "pw"})

    def client(name: str) -> Client:
        c = Client(CallbackAPIVersion.VERSION2, client_id=name,
                   protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        c.username_pw_set(name, "pw")
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        return c

    with broker:
        edge = client("edge-1")
        subscribed: queue.Queue[bool] = queue.Queue()
        edge.on_subscribe = lambda *_: subscribed.put(True)
        edge.subscribe("readers/door-1", qos=1)
        assert subscribed.get(timeout=10)  # the session has its subscription
        edge.disconnect()
        edge.loop_stop()
        reader = client("zebra-1")
        for n in range(50):
            reader.publish("readers/door-1", f"read {n}", qos=1).wait_for_publish(10)
        reader.disconnect()
        reader.loop_stop()
        # A save follows each change within the broker's loop, not before its PUBACK: a crash
        # in that instant still loses the newest read. The crash comes a moment later.
        time.sleep(0.5)
        broker.stop(signal.SIGKILL)  # PUBACKed, queued for the edge, never delivered
        broker.start()
        got: queue.Queue[bytes] = queue.Queue()
        edge = Client(CallbackAPIVersion.VERSION2, client_id="edge-1",
                      protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        edge.username_pw_set("edge-1", "pw")
        edge.on_message = lambda c, u, m: got.put(bytes(m.payload))
        edge.connect("127.0.0.1", broker.port)
        edge.loop_start()
        received: set[bytes] = set()
        try:
            deadline = time.monotonic() + 10
            while len(received) < 50 and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    received.add(got.get(timeout=0.2))
        finally:
            edge.disconnect()
            edge.loop_stop()
    assert received == {f"read {n}".encode() for n in range(50)}
