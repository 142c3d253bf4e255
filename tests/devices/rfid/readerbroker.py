"""deploy/mosquitto/reader-broker.conf on a real mosquitto, only its paths and ports moved.

The production file has two listeners: plain MQTT on loopback for the edge of the same host,
and TLS for the readers. Here the plain one moves to a free port, the TLS one to another free
port with a test CA's certificates (or is left out, for tests that do not need it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from floorsync.localbroker import Mosquitto, free_port
from tests.security.pki import Issued, TestCA

CONF = Path(__file__).resolve().parents[3] / "deploy" / "mosquitto" / "reader-broker.conf"


def conf_lines() -> list[tuple[str, str]]:
    out = []
    for line in CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.append((key, value.strip()))
    return out


def reader_broker(directory: Path, logins: dict[str, str],
                  tls: tuple[TestCA, Issued] | None = None) -> tuple[Mosquitto, int]:
    """A stopped Mosquitto running the production reader-broker config, and the TLS
    listener's port (0 without ``tls``). ``logins``: username -> password."""
    broker = Mosquitto(directory)
    passwd = directory / "readers.passwd"
    for i, (user, password) in enumerate(logins.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd),
                        user, password], check=True, capture_output=True)
    tls_port = free_port() if tls else 0
    moved = {"password_file": str(passwd), "persistence_location": f"{directory}/"}
    if tls:
        ca, cert = tls
        moved |= {"cafile": str(ca.cert), "certfile": str(cert.cert), "keyfile": str(cert.key)}
    lines: list[str] = []
    in_tls = False
    listeners = [v for k, v in conf_lines() if k == "listener"]
    assert len(listeners) == 2 and listeners[0].endswith("127.0.0.1"), listeners
    for key, value in conf_lines():
        if key == "listener":
            in_tls = value == listeners[1]
            if in_tls and not tls:
                continue
            value = f"{tls_port if in_tls else broker.port} 127.0.0.1"
        elif in_tls and not tls and key in ("cafile", "certfile", "keyfile"):
            continue
        lines.append(f"{key} {moved.get(key, value)}")
    lines += [f"log_dest file {directory}/mosquitto.log", "log_type error", "log_type warning",
              "log_type notice"]
    if os.geteuid() == 0:  # mosquitto would drop to a "mosquitto" user
        lines.append("user root")
    broker.config.write_text("\n".join(lines) + "\n")
    return broker, tls_port
