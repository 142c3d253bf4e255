"""Door alerts: a dock door tells the people at it, at once and offline, what its check said.

A door's receive is checked against the receipts open at its location (``edge.documents``)
where it is committed (``edge.doorstate``). Over and unexpected cases are logged there, as
they always were; a portal can also give them to an **alert output** the crew sees or hears,
configured per portal (``edge.config.PortalConfig``):

- ``alert = "log"`` (the default): the log line alone.
- ``alert = "command"``: a local program (a stack-light or speaker driver), run per alert as
  ``alert_command`` + ``door check item receipt`` (the item is the EPC's pure-identity URI for
  a tag, else its GTIN or SKU), with the alert as one JSON object on its stdin (``door``,
  ``location``, ``check``, ``item``, ``qty``, ``receipt``, ``event_id``, ``time``,
  ``message``). Exit 0 is sent; another exit, or still running after ``alert_timeout_s``
  (its process group is killed), is failed.
- ``alert = "impinj-gpo"``: the reader's GPO, through the Impinj IoT device interface (R700):
  ``PUT {alert_url}/device/gpos`` with ``{"gpoConfigurations": [{"gpo": N, "control":
  "pulsed", "state": "high", "pulseDurationMilliseconds": alert_pulse_ms}]}``, HTTP Basic
  ``alert_username``/``alert_password`` (the reader's REST login), HTTPS verified against
  ``alert_ca_file`` (or the system's CAs). The reader ends the pulse itself.
- ``alert = "zebra-gpo"``: the reader's GPO, through Zebra's IoT Connector management
  interface over MQTT (FX9600, FX7500, ATR7000): ``{"command": "set_gpo", "command_id": ...,
  "payload": {"port": N, "state": true}}`` published (QoS 1) to ``alert_topic``, the reader's
  management command topic on the portal's ``broker`` (its login and TLS files), and the
  same with ``"state": false`` ``alert_pulse_ms`` later. Not connected to that broker: failed
  (a late "on" would light the lamp for the wrong case).

``alert_gpo`` is the output port, or a table per check (``{over = 1, unexpected = 2,
expected = 3}``: a red, amber, green stack light). ``alert_on`` names the checks that alert:
``["over", "unexpected"]`` by default; add ``"expected"`` for a good signal.

Never in the door's way: the door thread only puts the alert on a bounded queue
(``alert_queue``, 64 by default) and goes on; a worker thread per door gives it to the output.
An alert that finds the queue full is dropped and counted (and logged, once until the queue
has room again). Everything is local (the command, the reader on the floor network), so the
alert works with the central service cut off. Counted for ``edge.metrics``: alerts raised per
check, and per outcome sent, failed and dropped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from floorsync.edge import wire

log = logging.getLogger(__name__)

ALERTS = ("log", "command", "impinj-gpo", "zebra-gpo")
CHECKS = ("expected", "over", "unexpected")
DEFAULT_ON = ("over", "unexpected")
DEFAULT_QUEUE = 64
OUTCOMES = ("sent", "failed", "dropped")


@dataclass(frozen=True, slots=True)
class DoorAlert:
    """What the crew at a door must know about one movement, at once."""

    door: str
    location: str
    check: str  # expected, over, unexpected
    item: str  # the EPC (pure-identity URI) for a tag, else its GTIN or SKU
    qty: float
    receipt: str  # the receipt's id
    event_id: str
    time: str  # the movement's time
    message: str  # what the edge's check said

    def args(self) -> list[str]:
        return [self.door, self.check, self.item, self.receipt]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()


def alert_for(door: str, location: str, event: wire.Event, note: str) -> DoorAlert | None:
    """The alert of a movement the door kept with a receipt's check; None without one."""
    if event.doc is None or event.doc.check is None:
        return None
    item = event.item or wire.Item()
    return DoorAlert(door, location, event.doc.check, item.epc or item.key() or "?", event.qty,
                     event.doc.id, event.id, event.time, note)


class AlertFailed(Exception):
    """The output did not take the alert; the message says why."""


class Output(Protocol):
    """Where alerts go. ``open`` at start (a connection); ``send`` raises AlertFailed; ``due``
    is the monotonic time something is to be done without an alert (a GPO to turn off), done
    by ``tick``."""

    def open(self) -> None: ...

    def send(self, alert: DoorAlert) -> None: ...

    def due(self) -> float | None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class Once:
    """An output that sends each alert in one call: nothing to open, time or close."""

    def open(self) -> None:
        pass

    def due(self) -> float | None:
        return None

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class CommandOutput(Once):
    """A local program per alert: the alert's fields as arguments, its JSON on stdin."""

    def __init__(self, argv: Sequence[str], timeout_s: float) -> None:
        self.argv = list(argv)
        self.timeout_s = timeout_s

    def send(self, alert: DoorAlert) -> None:
        try:
            proc = subprocess.Popen(
                [*self.argv, *alert.args()], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)  # its own group: killed whole
        except OSError as exc:
            raise AlertFailed(f"cannot run {self.argv[0]}: {exc}") from None
        try:
            _, err = proc.communicate(alert.to_json(), timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pipe in (proc.stdin, proc.stderr):  # a child that left the group may hold them
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
            proc.wait()
            raise AlertFailed(f"{self.argv[0]} still running after {self.timeout_s:g} s:"
                              " killed") from None
        if proc.returncode != 0:
            said = err.decode("utf-8", "replace").strip()[-300:]
            raise AlertFailed(f"{self.argv[0]} exited with {proc.returncode}"
                              + (f": {said}" if said else ""))


class ImpinjGpo(Once):
    """A pulse on the reader's GPO through the Impinj IoT device interface (REST)."""

    def __init__(self, url: str, ports: dict[str, int], pulse_ms: int, timeout_s: float, *,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None) -> None:
        self.url = url.rstrip("/") + "/device/gpos"
        self.ports = ports
        self.pulse_ms = pulse_ms
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json"}
        if username is not None:
            login = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {login}"
        self.context = (ssl.create_default_context(cafile=ca_file)
                        if self.url.lower().startswith("https:") else None)

    def send(self, alert: DoorAlert) -> None:
        body = json.dumps({"gpoConfigurations": [{
            "gpo": self.ports[alert.check], "control": "pulsed", "state": "high",
            "pulseDurationMilliseconds": self.pulse_ms}]}).encode()
        request = urllib.request.Request(self.url, body, self.headers, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s,
                                        context=self.context) as answer:
                answer.read(65536)
        except urllib.error.HTTPError as exc:
            raise AlertFailed(f"the reader answered {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS
            raise AlertFailed(f"the reader at {self.url} did not take it: {exc}") from None


class ZebraGpo:
    """The reader's GPO on, then off, through Zebra's MQTT management interface."""

    def __init__(self, broker: str, topic: str, ports: dict[str, int], pulse_ms: int,
                 timeout_s: float, *, client_id: str, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from floorsync.devices.rfid import tls
        from floorsync.devices.rfid.mqtt_reader import broker_address

        host, port, secure = broker_address(broker)
        self.topic = topic
        self.ports = ports
        self.pulse_s = pulse_ms / 1000
        self.timeout_s = timeout_s
        self._off: dict[int, float] = {}  # port -> when it goes off
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        if secure:
            self.client.tls_set_context(tls.client_context(ca_file, cert_file, key_file,
                                                           what="door alert: broker TLS"))
        self.client.reconnect_delay_set(1, 30)
        self.address = (host, port)

    def open(self) -> None:
        self.client.connect_async(*self.address, keepalive=30)
        self.client.loop_start()  # connects, and connects again, in its own thread

    def _set(self, port: int, state: bool) -> None:
        if not self.client.is_connected():
            raise AlertFailed("not connected to the reader's broker")
        message = json.dumps({"command": "set_gpo", "command_id": uuid.uuid4().hex,
                              "payload": {"port": port, "state": state}})
        info = self.client.publish(self.topic, message, qos=1)
        if state:  # queued: it may reach the reader however late, so its off follows it
            self._off[port] = time.monotonic() + self.pulse_s
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise AlertFailed(f"set_gpo not published: {exc}") from None
        if not info.is_published():
            raise AlertFailed(f"set_gpo not acknowledged within {self.timeout_s:g} s")

    def send(self, alert: DoorAlert) -> None:
        self._set(self.ports[alert.check], True)

    def due(self) -> float | None:
        return min(self._off.values(), default=None)

    def tick(self) -> None:
        now = time.monotonic()
        for port, at in list(self._off.items()):
            if at <= now:
                del self._off[port]
                try:
                    self._set(port, False)
                except AlertFailed as exc:
                    log.error("door alert: GPO %d not turned off: %s", port, exc)

    def close(self) -> None:
        for port in list(self._off):
            self._off[port] = 0.0
        self.tick()
        self.client.disconnect()
        self.client.loop_stop()


class DoorAlerter:
    """One door's alerts: ``fire`` never blocks; a worker gives them to the output."""

    def __init__(self, door: str, output: Output | None, *, on: Sequence[str] = DEFAULT_ON,
                 queue_size: int = DEFAULT_QUEUE) -> None:
        self.door = door
        self.output = output
        self.on = frozenset(on)
        self._queue: queue.Queue[DoorAlert | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self.raised = dict.fromkeys(CHECKS, 0)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.last_error: str | None = None
        self._full = False  # said once until the queue has room again
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def start(self) -> DoorAlerter:
        if self.output is not None and self._worker is None:
            self.output.open()
            self._worker = threading.Thread(target=self._run, name=f"alert-{self.door}",
                                            daemon=True)
            self._worker.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """The alert being given finishes (a command within its timeout); the rest are dropped
        (counted). The output is closed (a GPO still on is turned off)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def fire(self, alert: DoorAlert) -> bool:
        """Raise an alert (its check among ``on``): True when it is queued for the output (or
        the output is the log line alone). Never blocks."""
        if alert.check not in self.on:
            return False
        with self._lock:
            self.raised[alert.check] = self.raised.get(alert.check, 0) + 1
        if self.output is None:
            return True
        if self._stop.is_set():
            self._count("dropped")
            return False
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._count("dropped")
            if not self._full:
                log.warning("door %s: alert output behind (%d waiting): alerts dropped until it"
                            " catches up", self.door, self._queue.maxsize,
                            extra={"door": self.door, "state": "alerts_dropped"})
            self._full = True
            return False
        self._full = False
        return True

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(raised per check, outcomes sent/failed/dropped): a copy."""
        with self._lock:
            return dict(self.raised), dict(self.outcomes)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _run(self) -> None:
        output = self.output
        assert output is not None
        try:
            while True:
                due = output.due()
                wait = None if due is None else max(0.0, due - time.monotonic())
                try:
                    alert = self._queue.get(timeout=wait)
                except queue.Empty:
                    self._tick(output)
                    continue
                if alert is None or self._stop.is_set():
                    break
                try:
                    output.send(alert)
                except AlertFailed as exc:
                    self._count("failed")
                    self.last_error = str(exc)
                    log.error("door %s: alert (%s %s) not given: %s", self.door, alert.check,
                              alert.item, exc, extra={"door": self.door, "state": "alert_failed"})
                except Exception as exc:  # an output's bug must not end the door's alerts
                    self._count("failed")
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("door %s: alert output failed", self.door)
                else:
                    self._count("sent")
                self._tick(output)
        finally:
            left = 0
            while True:
                try:
                    left += self._queue.get_nowait() is not None
                except queue.Empty:
                    break
            with self._lock:
                self.outcomes["dropped"] += left
            try:
                output.close()
            except Exception:
                log.exception("door %s: alert output not closed cleanly", self.door)

    def _tick(self, output: Output) -> None:
        try:
            output.tick()
        except Exception:  # as with send: the next alert must still be given
            log.exception("door %s: alert output failed", self.door)


def make_alerter(portal: Any, client_id: str) -> DoorAlerter:
    """A portal's alerter (``portal`` an ``edge.config.PortalConfig``, checked). Raises
    ConfigError for TLS files it cannot use."""
    from floorsync.devices.base import DeviceError
    from floorsync.edge.errors import ConfigError

    ports = dict(portal.alert_gpo)
    output: Output | None = None
    try:
        if portal.alert == "command":
            output = CommandOutput(portal.alert_command, portal.alert_timeout_s)
        elif portal.alert == "impinj-gpo":
            output = ImpinjGpo(portal.alert_url, ports, portal.alert_pulse_ms,
                               portal.alert_timeout_s, username=portal.alert_username,
                               password=portal.alert_password, ca_file=portal.alert_ca_file)
        elif portal.alert == "zebra-gpo":
            output = ZebraGpo(portal.broker, portal.alert_topic, ports, portal.alert_pulse_ms,
                              portal.alert_timeout_s, client_id=client_id,
                              username=portal.username, password=portal.password,
                              ca_file=portal.ca_file, cert_file=portal.cert_file,
                              key_file=portal.key_file)
    except (DeviceError, ssl.SSLError, OSError) as exc:
        raise ConfigError(f"portal {portal.name}: alert output: {exc}") from None
    return DoorAlerter(portal.name, output, on=portal.alert_on, queue_size=portal.alert_queue)
