"""The production mosquitto config (deploy/mosquitto/floorsync.conf) with its documented TLS
blocks uncommented, as written, on a real mosquitto: only ports, paths and files are moved.

    broker = TlsBroker.build(tmp_path, ca, server_cert, passwords={"hh-1": "pw"},
                             devices={"hh-1": "wh1"})
    with broker:
        broker.tls_url    # mqtts://localhost:PORT  (the ">>> tls" block: password over TLS)
        broker.mtls_url   # mqtts://localhost:PORT  (the ">>> mtls" block: client certificates)
        broker.url        # mqtt://127.0.0.1:PORT   (the plain listener)

``extra_listeners`` adds TLS listeners with other certificates (a wrong host name, another CA)
to the same broker, for the refusal tests. The ACL is a copy of deploy's (``broker.acl``) with a
block added by ``floorsync enroll``'s own function for each of ``devices`` (device -> site):
the shipped file gives devices no rights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from floorsync import enroll
from floorsync.localbroker import Mosquitto, free_port
from tests.security.pki import Issued, TestCA

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONF = DEPLOY / "mosquitto" / "floorsync.conf"
ACL = DEPLOY / "mosquitto" / "floorsync.acl"


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


class TlsBroker(Mosquitto):
    """deploy's floorsync.conf + ACL with its tls and mtls listeners on free ports."""

    tls_port: int
    mtls_port: int
    passwd: Path
    crl: Path
    acl: Path

    @classmethod
    def build(cls, directory: Path, ca: TestCA, server: Issued,
              passwords: Mapping[str, str] | None = None,
              extra_listeners: Sequence[tuple[Issued, Path]] = (),
              passwd: Path | None = None, crl: Path | None = None,
              acl: Path | None = None, devices: Mapping[str, str] | None = None) -> TlsBroker:
        """``extra_listeners``: (server certificate, CA file) pairs, each on its own port
        (``extra_ports``). ``passwd``/``crl``: files to use (default: new ones here);
        ``acl``: an ACL file to use (default: a copy of deploy's here); ``devices``: device ->
        site, each given its block in that file."""
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
        broker.crl = crl or ca.crl([], path=directory / "crl.pem")
        broker.tls_port, broker.mtls_port = free_port(), free_port()
        active, blocks = conf_blocks()
        assert set(blocks) == {"tls", "mtls"}, blocks
        files = {"cafile": str(ca.cert), "certfile": str(server.cert),
                 "keyfile": str(server.key), "crlfile": str(broker.crl)}
        moved = {
            "listener": f"{broker.port} 127.0.0.1",
            "persistence_location": f"{broker.directory}/",
            "password_file": str(broker.passwd),
            "acl_file": str(acl),
            "log_dest": f"file {broker.directory}/mosquitto.log",
        }
        lines = [f"{k} {moved.get(k, v)}" for k, v in active]
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

    extra_ports: list[int]

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def mtls_url(self) -> str:
        return f"mqtts://localhost:{self.mtls_port}"

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text() if path.exists() else ""
