"""The production broker config on a real mosquitto, and a raw MQTT client to probe it.

``ProductionBroker.build`` runs deploy/mosquitto/floorsync.conf as written: only ports, paths
and files are moved. With ``tls=(ca, server certificate)`` its documented TLS blocks are
uncommented too::

    broker = ProductionBroker.build(tmp_path, passwords={"hh-1": "pw"}, devices={"hh-1": "wh1"},
                                    tls=(ca, ca.server("broker")))
    with broker:
        broker.url        # mqtt://127.0.0.1:PORT   (the plain listener)
        broker.tls_url    # mqtts://localhost:PORT  (the ">>> tls" block: password over TLS)
        broker.mtls_url   # mqtts://localhost:PORT  (the ">>> mtls" block: client certificates)

The ACL is a copy of deploy's (``broker.acl``) with a block added by ``floorsync enroll``'s own
function for each of ``devices`` (device -> site): the shipped file gives devices no rights.

``Peer`` is a paho client (MQTT 5 or 3.1.1, plain or TLS) that keeps what it receives, each
SUBACK's codes and each PUBACK's reason code.
"""

from __future__ import annotations

import os
import queue
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from floorsync import enroll
from floorsync.localbroker import Mosquitto, free_port
from tests.security.pki import Issued, TestCA

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONF = DEPLOY / "mosquitto" / "floorsync.conf"
ACL = DEPLOY / "mosquitto" / "floorsync.acl"
WAIT_S = 15.0  # only ever waited out when a test fails


def conf_blocks() -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """The active lines, and each commented ``# >>> name`` ... ``# <<<`` block uncommented."""
    active: list[tuple[str, str]] = []
    blocks: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for raw in CONF.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# >>> "):
            current = line[6:].split(":")[0].strip()
            blocks[current] = []
        elif line.startswith("# <<<"):
            current = None
        elif current is not None and line.startswith("#") and not line.startswith("# "):
            key, _, value = line[1:].partition(" ")
            blocks[current].append((key, value.strip()))
        elif line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            active.append((key, value.strip()))
    return active, blocks


def add_password(passwd: Path, user: str, password: str) -> None:
    create = [] if passwd.exists() else ["-c"]
    subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password],
                   check=True, capture_output=True)


class ProductionBroker(Mosquitto):
    """deploy's floorsync.conf + ACL; with ``tls``, its tls and mtls listeners on free ports."""

    tls_port: int
    mtls_port: int
    extra_ports: list[int]
    passwd: Path
    crl: Path
    acl: Path

    @classmethod
    def build(cls, directory: Path, passwords: Mapping[str, str] | None = None,
              devices: Mapping[str, str] | None = None, *,
              tls: tuple[TestCA, Issued] | None = None,
              extra_listeners: Sequence[tuple[Issued, Path]] = (),
              passwd: Path | None = None, crl: Path | None = None,
              acl: Path | None = None) -> ProductionBroker:
        """``tls``: the CA and the broker's certificate for the TLS blocks (none: the plain
        listener only). ``extra_listeners``: (server certificate, CA file) pairs, each on its
        own TLS port (``extra_ports``). ``passwd``/``crl``: files to use (default: new ones
        here); ``acl``: an ACL file to use (default: a copy of deploy's here); ``devices``:
        device -> site, each given its block in that file."""
        broker = cls(directory / "broker")
        if acl is None:
            acl = directory / "floorsync.acl"
            shutil.copyfile(ACL, acl)
        broker.acl = acl
        for device, site in (devices or {}).items():
            enroll.acl_add(acl, device, site)
        broker.passwd = passwd or directory / "floorsync.passwd"
        for user, password in (passwords or {}).items():
            add_password(broker.passwd, user, password)
        if not broker.passwd.exists():
            broker.passwd.write_text("")
        active, blocks = conf_blocks()
        assert set(blocks) == {"tls", "mtls"}, blocks
        moved = {
            "listener": f"{broker.port} 127.0.0.1",
            "persistence_location": f"{broker.directory}/",
            "password_file": str(broker.passwd),
            "acl_file": str(acl),
            "log_dest": f"file {broker.directory}/mosquitto.log",
        }
        assert {k for k, _ in active} >= set(moved)
        lines = [f"{k} {moved.get(k, v)}" for k, v in active]
        broker.tls_port = broker.mtls_port = 0
        if tls is not None:
            ca, server = tls
            broker.crl = crl or ca.crl([], path=directory / "crl.pem")
            broker.tls_port, broker.mtls_port = free_port(), free_port()
            files = {"cafile": str(ca.cert), "certfile": str(server.cert),
                     "keyfile": str(server.key), "crlfile": str(broker.crl)}
            for name, port in (("tls", broker.tls_port), ("mtls", broker.mtls_port)):
                for key, value in blocks[name]:
                    value = f"{port} 127.0.0.1" if key == "listener" else files.get(key, value)
                    lines.append(f"{key} {value}")
        broker.extra_ports = []
        for issued, cafile in extra_listeners:
            port = free_port()
            broker.extra_ports.append(port)
            lines += [f"listener {port} 127.0.0.1", f"cafile {cafile}",
                      f"certfile {issued.cert}", f"keyfile {issued.key}"]
        if os.geteuid() == 0:  # mosquitto would drop to a "mosquitto" user
            lines.append("user root")
        broker.config.write_text("\n".join(lines) + "\n")
        return broker

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def mtls_url(self) -> str:
        return f"mqtts://localhost:{self.mtls_port}"

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text() if path.exists() else ""


def tls_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trusting ``ca`` only; with ``cert`` (certificate, key), presenting it."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


@dataclass(frozen=True, slots=True)
class Got:
    topic: str
    payload: bytes
    retain: bool


class Peer:
    """A raw paho client; keeps what it receives, each SUBACK's codes and each PUBACK's code.

    ``connected`` gets the CONNACK's reason code (0: accepted). With ``tls`` it connects to
    ``localhost`` (the name in the test brokers' certificates), else to 127.0.0.1.
    """

    def __init__(self, port: int, login: tuple[str, str] | None = None, *,
                 protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
                 tls: ssl.SSLContext | None = None, name: str = "peer") -> None:
        self.v5 = protocol == MQTTProtocolVersion.MQTTv5
        self.received: queue.Queue[Got] = queue.Queue()
        self.connected: queue.Queue[int] = queue.Queue()
        self._granted: queue.Queue[list[int]] = queue.Queue()
        self._pubacks: dict[int, int] = {}
        self._puback_seen = threading.Condition()
        self.client = Client(CallbackAPIVersion.VERSION2,
                             client_id=f"{name}-{uuid.uuid4().hex[:12]}", protocol=protocol)
        if tls is not None:
            self.client.tls_set_context(tls)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc.value)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._granted.put(
            [rc.value for rc in rcs])
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect("localhost" if tls is not None else "127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.received.put(Got(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_publish(self, client: Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties) -> None:
        with self._puback_seen:
            self._pubacks[mid] = reason.value
            self._puback_seen.notify_all()

    def subscribe(self, *filters: str) -> list[int]:
        """The SUBACK's codes: the granted QoS, or a failure code (0x80 and up)."""
        self.client.subscribe([(f, 1) for f in filters])
        return self._granted.get(timeout=WAIT_S)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """QoS 1, waited for until the broker's PUBACK: returns its reason code (always 0
        under MQTT 3.1.1, whose PUBACK has none)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        with self._puback_seen:
            assert self._puback_seen.wait_for(lambda: info.mid in self._pubacks, WAIT_S)
            return self._pubacks.pop(info.mid)

    def drain(self, wait: float = 0.5) -> list[tuple[str, bytes]]:
        """(topic, payload) of everything received until nothing came for ``wait`` seconds."""
        out = []
        try:
            while True:
                got = self.received.get(timeout=wait)
                out.append((got.topic, got.payload))
        except queue.Empty:
            return out

    def until(self, topic: str, payload: bytes) -> list[Got]:
        """Everything received up to and including the first (topic, payload)."""
        out: list[Got] = []
        deadline = time.monotonic() + WAIT_S
        while not out or (out[-1].topic, out[-1].payload) != (topic, payload):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{payload!r} on {topic} never arrived; got {out}"
            try:
                out.append(self.received.get(timeout=remaining))
            except queue.Empty:
                continue
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
