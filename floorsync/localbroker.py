"""A local mosquitto on a free loopback port, for benchmarks and tests (not for production).

Each user gets its own broker (its own port, config and persistence directory), so runs never
share retained messages or sessions, and a test can stop, kill and restart its broker. Queue
limits are raised on purpose: the default ``max_queued_messages 1000`` drops QoS 1 messages for
a slow subscriber after PUBACKing them (FIELD-NOTES).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from floorsync.edge.errors import EdgeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_for_mqtt(port: int, timeout: float = 10.0) -> None:
    """Until an MQTT 3.1.1 CONNECT to 127.0.0.1:port gets its CONNACK. A bare TCP probe would
    do to see the port, but amqtt logs an ERROR ("No data from client") for every client that
    connects and says nothing: a new user reading the demo's broker.log should find none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="floorsync-probe",
                             protocol=mqtt.MQTTv311)
        try:
            client.connect("127.0.0.1", port, keepalive=10)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            while not client.is_connected() and time.monotonic() < deadline:
                if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                    break
            if client.is_connected():
                return
        finally:
            client.disconnect()
            client.loop(0.1)
        time.sleep(0.05)
    raise TimeoutError(f"no MQTT broker answers on 127.0.0.1:{port} after {timeout}s")


class Mosquitto:
    """A mosquitto on 127.0.0.1:port with persistence in ``directory``; restartable."""

    def __init__(self, directory: Path, port: int | None = None, extra: str = "") -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise EdgeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = directory / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"{user}"
            "set_tcp_nodelay true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 0\n"
            "persistent_client_expiration 1d\n"
            f"log_dest file {directory}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + extra
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError as exc:
            self.stop()
            log = self.directory / "mosquitto.log"
            raise EdgeError(
                f"mosquitto did not start: {log.read_text() if log.exists() else ''}"
            ) from exc
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM saves persistence; SIGKILL simulates a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
