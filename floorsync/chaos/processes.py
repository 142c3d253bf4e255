"""The processes of one scenario's site, each its own process as on a site: the central broker
and, at the dock, the reader-side broker (mosquitto with a persistence directory), the
central service (``floorsync server`` on SQLite) and the edge agent (``floorsync edge
--config``, optionally under libfaketime); started, stopped, SIGKILLed and restarted, the
central service also SIGSTOPped and SIGCONTed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from floorsync.edge.errors import EdgeError
from floorsync.localbroker import free_port, mosquitto_binary, wait_for_port

FAKETIME_LIBS = (
    *(f"/usr/lib/{arch}/faketime/libfaketime.so.1"
      for arch in ("x86_64-linux-gnu", "aarch64-linux-gnu", "arm-linux-gnueabihf")),
    "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1",
)

# libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC breaks Python >= 3.11's
# time.sleep (clock_nanosleep with TIMER_ABSTIME gets a negative time: EINVAL, libfaketime issue
# #426); faking the monotonic clock too would step it back with the wall clock, which no NTP
# step does. So an edge under a faked clock runs the real ``floorsync edge`` with time.sleep
# served by an Event wait (pthread_cond_timedwait, which libfaketime handles).
_SLEEP_SHIM = (
    "import sys, threading, time\n"
    "_wait = threading.Event().wait\n"
    "time.sleep = lambda seconds: None if _wait(max(0.0, seconds)) else None\n"
    "from floorsync.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class Broker:
    """A mosquitto on a fixed loopback port: killed, restarted, with or without persistence."""

    def __init__(self, directory: Path, *, small_queues: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise EdgeError("mosquitto is not installed (deploy/bootstrap.sh mosquitto)")
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.small_queues = small_queues
        self.persistent = True
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        limits = ("max_queued_messages 8\nmax_inflight_messages 4\n" if self.small_queues
                  else "max_queued_messages 1000000\nmax_inflight_messages 0\n")
        # Saved after every change: a SIGKILLed mosquitto loses what it acknowledged since its
        # last save (time-based saving lost up to a second of a reader's reads, the broker's
        # loss, not the edge's); per change, that window is the few microseconds of one loop.
        store = (f"persistence true\npersistence_location {self.directory}/\n"
                 "autosave_interval 1\nautosave_on_changes true\n" if self.persistent
                 else "persistence false\n")
        path = self.directory / "mosquitto.conf"
        path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            + "set_tcp_nodelay true\n" + store + limits
            + "max_queued_bytes 0\npersistent_client_expiration 1d\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n")
        return path

    def start(self, *, persistent: bool = True) -> None:
        self.persistent = persistent
        self.process = subprocess.Popen([self.binary, "-c", str(self._config())],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError as exc:
            raise EdgeError(f"mosquitto did not start; see {self.directory}/mosquitto.log") from exc

    def kill(self) -> None:
        _signal_and_wait(self.process, signal.SIGKILL)
        self.process = None

    def forget(self) -> None:
        """Remove the persistence file: what a broker without persistence comes back with."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "mosquitto.db").unlink()

    def stop(self) -> None:
        _signal_and_wait(self.process, signal.SIGTERM)
        self.process = None

    def ensure_running(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return False
        self.start(persistent=self.persistent)
        return True


def _signal_and_wait(process: subprocess.Popen[bytes] | None, sig: int, wait: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if sig != signal.SIGKILL:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.send_signal(sig)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Central:
    """``floorsync server`` on SQLite, as its own process: killed, stalled, restarted."""

    def __init__(self, directory: Path, broker: Broker) -> None:
        self.database = directory / "central.db"
        self.log = directory / "central.log"
        self.broker = broker
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.token = "chaos-" + os.urandom(12).hex()
        self.process: subprocess.Popen[bytes] | None = None
        self.stalled = False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "floorsync", "--log-level", "WARNING", "server",
                 "--db", str(self.database), "--broker", self.broker.url, "--port",
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "FLOORSYNC_TOKENS": f"{self.token}=admin",
                     "FLOORSYNC_TOKENS_FILE": "", "FLOORSYNC_AUTH": "on"})

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                self.request("GET", "health", timeout=1)
                return True
            except (OSError, ValueError):
                time.sleep(0.1)
        return False

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 5) -> Any:
        request = urllib.request.Request(
            f"{self.api}/{path}", data=body, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and path == "health":  # answering, its broker link is down
                return json.loads(exc.read() or b"{}")
            raise

    def kill(self) -> None:
        _signal_and_wait(self.process, signal.SIGKILL)
        self.stalled = False

    def stall(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)
            self.stalled = True

    def resume(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
        self.stalled = False

    def stop(self) -> None:
        _signal_and_wait(self.process, signal.SIGTERM)
        self.stalled = False


class Edge:
    """``floorsync edge --config``: SIGKILLed and restarted; optionally under libfaketime."""

    def __init__(self, config: Path, log: Path, faketime: tuple[str, Path] | None) -> None:
        self.config = config
        self.log = log
        self.faketime = faketime
        self.process: subprocess.Popen[bytes] | None = None
        self.up = threading.Event()  # set while a run has its device online (operator waits)
        self._generation = 0

    def start(self) -> None:
        args = ["--log-level", "INFO", "edge", "--config", str(self.config)]
        env = dict(os.environ)
        if self.faketime is not None:
            library, offset_file = self.faketime
            argv = [sys.executable, "-c", _SLEEP_SHIM, *args]
            env.update(LD_PRELOAD=library, FAKETIME_TIMESTAMP_FILE=str(offset_file),
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        else:
            argv = [sys.executable, "-m", "floorsync", *args]
        with open(self.log, "ab") as log:
            offset = log.tell()
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
        self._generation += 1
        threading.Thread(target=self._watch, args=(self._generation, self.process, offset),
                         daemon=True).start()

    def _watch(self, generation: int, process: subprocess.Popen[bytes], offset: int) -> None:
        """``up`` once this run says its device is online (its scanner port or reader)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            with open(self.log, "rb") as f:
                f.seek(offset)
                if b" online (" in f.read():
                    if generation == self._generation:
                        self.up.set()
                    return
            time.sleep(0.05)

    def wait_up(self, timeout: float = 30) -> bool:
        return self.up.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        self.up.clear()
        _signal_and_wait(self.process, signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM: the agent finishes its doors and waits ``drain_s`` for the last acks."""
        self.up.clear()
        _signal_and_wait(self.process, signal.SIGTERM, wait=60)
        return None if self.process is None else self.process.returncode
