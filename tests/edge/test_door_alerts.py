"""Door alerts (``edge.dooralert``) with real parts: the real door logic, outbox and document
book; a real program run per alert; a fake Impinj IoT device interface (an HTTP server) and a
real mosquitto standing in for a Zebra reader's management broker; the whole agent with a serial
RFID reader on a pty and no central service. An over case fires one alert with its fields, an
expected one none unless asked, and a hung program, a hung reader or a full queue never hold
the door up (dropped alerts counted, hung programs killed)."""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from floorsync.devices.sim import open_pty
from floorsync.edge.agent import EdgeAgent
from floorsync.edge.config import PortalConfig, load
from floorsync.edge.documents import book_for
from floorsync.edge.dooralert import DoorAlert, DoorAlerter, make_alerter
from floorsync.edge.doorstate import DoorKeeper
from floorsync.edge.errors import ConfigError
from floorsync.edge.metrics import EdgeCollector
from floorsync.edge.outbox import Outbox
from floorsync.edge.portal import Door
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import DOOR_GTIN, SITE, case_uri, give, line, payloads, receipt
from tests.edge.test_agent import _config
from tests.edge.test_door_scenarios import Floor, case, door, run

RECORDER = """\
import json, os, sys, time
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"args": sys.argv[2:], "alert": json.loads(sys.stdin.read()),
                          "pid": os.getpid()}) + "\\n")
if len(sys.argv) > 6 and sys.argv[2] == "hang":
    time.sleep(60)
"""


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "stacklight.py"
    script.write_text(RECORDER)
    return script, tmp_path / "alerts.jsonl"


def heard(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def portal(**alert: Any) -> PortalConfig:
    return door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in", **alert)


def passes(*tags: str) -> Floor:
    floor = Floor()
    for n, tag in enumerate(tags):
        floor.sweep("door-a", tag, 1, 1.0 + 2 * n, 1.5 + 2 * n)
    return floor


def keep_truck(tmp_path: Path, config: PortalConfig, alerter: DoorAlerter, cases: int,
               expects: int = 3) -> tuple[Path, float]:
    """A receipt of ``expects`` cases at DOCK-A, ``cases`` cases through the door: (outbox,
    seconds the door's keep took)."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        give(book_for(outbox, SITE), receipt("ASN-1", line(expects, DOOR_GTIN),
                                             location="DOCK-A"))
        keeper = DoorKeeper(outbox, Door(config), alerts=alerter)
        events = run([keeper.door], passes(*[case(n) for n in range(1, cases + 1)]),
                     until=2 * cases + 10).events
        started = time.monotonic()
        assert keeper.keep(events) == (cases, True)
        took = time.monotonic() - started
    return path, took


def test_an_over_case_fires_one_alert_with_its_fields(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    config = portal(alert="command", alert_command=(sys.executable, str(script), str(out)))
    alerter = make_alerter(config, "c").start()
    try:
        path, _ = keep_truck(tmp_path, config, alerter, cases=4)  # three expected, one over
        wait_until(lambda: alerter.counts()[1]["sent"] == 1, 10, "the alert given")
    finally:
        alerter.stop()
    (said,) = heard(out)
    over = next(i for i, p in payloads(path).items() if p["doc"]["check"] == "over")
    assert said["args"] == ["door-a", "over", case_uri(4), "ASN-1"]
    alert = said["alert"]
    assert {k: alert[k] for k in ("door", "location", "check", "item", "qty", "receipt",
                                  "event_id")} == {
        "door": "door-a", "location": "DOCK-A", "check": "over", "item": case_uri(4), "qty": 1,
        "receipt": "ASN-1", "event_id": over}
    assert alert["time"] == payloads(path)[over]["time"] and "OVER" in alert["message"]
    assert alerter.counts() == ({"expected": 0, "over": 1, "unexpected": 0},
                                {"sent": 1, "failed": 0, "dropped": 0})


def test_expected_cases_fire_nothing_unless_a_good_signal_is_asked_for(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    config = portal(alert="command", alert_command=(sys.executable, str(script), str(out)))
    quiet = make_alerter(config, "c").start()
    try:
        keep_truck(tmp_path / "a", config, quiet, cases=3)
    finally:
        quiet.stop()
    assert heard(out) == [] and quiet.counts()[0] == {"expected": 0, "over": 0, "unexpected": 0}
    good = portal(alert="command", alert_command=(sys.executable, str(script), str(out)),
                  alert_on=("expected",))
    green = make_alerter(good, "c").start()
    try:
        keep_truck(tmp_path / "b", good, green, cases=4)
        wait_until(lambda: len(heard(out)) == 3, 10, "three good signals")
    finally:
        green.stop()
    assert sorted(h["args"][2] for h in heard(out)) == [case_uri(n) for n in (1, 2, 3)]
    assert {h["args"][1] for h in heard(out)} == {"expected"}


def test_a_hung_command_neither_holds_the_door_nor_lives_on(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    config = portal(alert="command", alert_timeout_s=1.0, alert_queue=2,
                    alert_command=(sys.executable, str(script), str(out), "hang"))
    alerter = make_alerter(config, "c").start()
    try:
        # one case expected, seven over: each alert's program hangs for a minute
        _, took = keep_truck(tmp_path, config, alerter, cases=8, expects=1)
        assert took < 0.5, f"the door waited {took:.2f} s for its alerts"
        raised, given = alerter.counts()
        assert raised["over"] == 7 and given["dropped"] >= 4  # one running, two queued
        wait_until(lambda: sum(alerter.counts()[1].values()) == 7, 10, "the queue worked off")
        raised, given = alerter.counts()
        assert given["sent"] == 0 and given["failed"] == 7 - given["dropped"]
        assert "still running after 1 s: killed" in (alerter.last_error or "")
    finally:
        alerter.stop()
    pids = [h["pid"] for h in heard(out)]
    assert len(pids) == 7 - given["dropped"]
    for pid in pids:  # killed and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_full_queue_drops_and_counts_and_fire_never_blocks() -> None:
    class Stuck:
        def __init__(self) -> None:
            self.release = threading.Event()

        def open(self) -> None:
            pass

        def send(self, alert: DoorAlert) -> None:
            self.release.wait(10)

        def due(self) -> None:
            return None

        def tick(self) -> None:
            pass

        def close(self) -> None:
            pass

    stuck = Stuck()
    alerter = DoorAlerter("door-a", stuck, queue_size=3).start()
    alert = DoorAlert("door-a", "DOCK-A", "over", case_uri(1), 1, "ASN-1", "e1", "t", "OVER")
    started = time.monotonic()
    fired = [alerter.fire(alert) for _ in range(1000)]
    assert time.monotonic() - started < 0.5
    assert 3 <= sum(fired) <= 4 and alerter.counts()[1]["dropped"] == 1000 - sum(fired)
    stuck.release.set()
    wait_until(lambda: alerter.counts()[1]["sent"] == sum(fired), 5, "the queue worked off")
    alerter.stop()


class FakeImpinj:
    """What an R700's IoT device interface does with PUT /api/v1/device/gpos: 204, or what the
    test says."""

    def __init__(self, status: int = 204, delay: float = 0.0) -> None:
        self.requests: queue.Queue[tuple[str, str, str | None, Any]] = queue.Queue()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.put((self.command, self.path, self.headers["Authorization"],
                                   body))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def impinj() -> Iterator[FakeImpinj]:
    fake = FakeImpinj()
    yield fake
    fake.close()


def test_an_impinj_reader_pulses_the_gpo_of_the_check(
        tmp_path: Path, impinj: FakeImpinj) -> None:
    config = portal(alert="impinj-gpo", alert_url=impinj.url, alert_username="root",
                    alert_password="impinj", alert_gpo={"over": 1, "unexpected": 2},
                    alert_pulse_ms=1500)
    alerter = make_alerter(config, "c").start()
    try:
        keep_truck(tmp_path, config, alerter, cases=4)
        method, path, login, body = impinj.requests.get(timeout=10)
        wait_until(lambda: alerter.counts()[1]["sent"] == 1, 5, "the pulse sent")
    finally:
        alerter.stop()
    assert (method, path) == ("PUT", "/api/v1/device/gpos")
    assert login == "Basic " + base64.b64encode(b"root:impinj").decode()
    assert body == {"gpoConfigurations": [{"gpo": 1, "control": "pulsed", "state": "high",
                                           "pulseDurationMilliseconds": 1500}]}
    assert impinj.requests.empty()  # one over case, one pulse; the reader ends it itself


@pytest.mark.parametrize(("status", "delay", "why"), [
    (403, 0.0, "answered 403"), (204, 3.0, "did not take it")])
def test_an_impinj_reader_that_refuses_or_hangs_is_a_failed_alert(
        status: int, delay: float, why: str) -> None:
    fake = FakeImpinj(status, delay)
    try:
        config = portal(alert="impinj-gpo", alert_url=fake.url, alert_timeout_s=0.5)
        alerter = make_alerter(config, "c").start()
        alert = DoorAlert("door-a", "DOCK-A", "over", case_uri(4), 1, "ASN-1", "e", "t", "OVER")
        started = time.monotonic()
        assert alerter.fire(alert) and time.monotonic() - started < 0.1
        wait_until(lambda: alerter.counts()[1]["failed"] == 1, 5, "the failure counted")
        assert why in (alerter.last_error or "")
        alerter.stop()
    finally:
        fake.close()


def test_a_zebra_reader_gets_set_gpo_on_then_off_over_its_broker(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    got: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    reader = Client(CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    reader.on_connect = lambda c, *a: c.subscribe("zebra/fx9600/mcmds", qos=1)
    reader.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Client, userdata: Any, msg: MQTTMessage) -> None:
        got.put((time.monotonic(), json.loads(msg.payload)))

    reader.on_message = on_message
    reader.connect("127.0.0.1", mosquitto.port)
    reader.loop_start()
    assert subscribed.wait(10)
    config = portal(reader="zebra-mqtt", broker=mosquitto.url, topic="zebra/fx9600/data",
                    alert="zebra-gpo", alert_topic="zebra/fx9600/mcmds",
                    alert_gpo={"over": 3, "unexpected": 4}, alert_pulse_ms=300)
    alerter = make_alerter(config, "floorsync-wh1-edge-door-a-alert").start()
    try:
        output: Any = alerter.output
        wait_until(lambda: output.client.is_connected(), 10, "the alert client connected")
        keep_truck(tmp_path, config, alerter, cases=4)
        on_at, on = got.get(timeout=10)
        off_at, off = got.get(timeout=10)
    finally:
        alerter.stop()
        reader.loop_stop()
        reader.disconnect()
    assert (on["command"], on["payload"]) == ("set_gpo", {"port": 3, "state": True})
    assert (off["command"], off["payload"]) == ("set_gpo", {"port": 3, "state": False})
    assert on["command_id"] != off["command_id"]
    assert 0.25 <= off_at - on_at < 2.0
    assert alerter.counts()[1] == {"sent": 1, "failed": 0, "dropped": 0}


def test_a_zebra_alert_without_the_broker_fails_at_once(tmp_path: Path) -> None:
    config = portal(reader="zebra-mqtt", broker="mqtt://127.0.0.1:9", topic="t",
                    alert="zebra-gpo", alert_topic="zebra/mcmds")
    alerter = make_alerter(config, "c").start()
    try:
        keep_truck(tmp_path, config, alerter, cases=4)
        wait_until(lambda: alerter.counts()[1]["failed"] == 1, 5, "the failure counted")
        assert "not connected" in (alerter.last_error or "")
    finally:
        alerter.stop()


@pytest.mark.parametrize(("keys", "reason"), [
    ('alert = "siren"', "alert must be one of"),
    ('alert = "command"', "needs alert_command"),
    ('alert_command = ["x"]', "do not apply to alert = 'log'"),
    ('alert = "impinj-gpo"', "needs alert_url"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_topic = "t"',
     "alert_topic do not apply"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_username = "root"',
     "go together"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_ca_file = "/no/ca.pem"',
     "alert_ca_file needs"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_gpo = {over = 1}',
     "names no port for ['unexpected']"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_gpo = {red = 1}',
     "'red' is not a check"),
    ('alert = "impinj-gpo"\nalert_url = "http://r/api/v1"\nalert_gpo = 0', "ports are whole"),
    ('alert = "zebra-gpo"\nalert_topic = "t"', "needs reader = 'zebra-mqtt'"),
    ('alert_on = ["short"]', "alert_on must be a list"),
    ('alert = "command"\nalert_command = ["x"]\nalert_queue = 0', "alert_queue must be"),
    ('alert = "command"\nalert_command = ["x"]\nalert_timeout_s = 0', "alert_timeout_s must"),
])
def test_the_alert_keys_are_checked(tmp_path: Path, keys: str, reason: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[[portals]]\nname = "door-a"\nlocation = "DOCK-A"\n' + keys + "\n")
    with pytest.raises(ConfigError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        load(path)


def test_the_alert_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[[portals]]\nname = "door-a"\nlocation = "DOCK-A"\n'
                    'alert = "impinj-gpo"\nalert_url = "https://10.0.0.7/api/v1"\n'
                    'alert_gpo = {over = 1, unexpected = 2, expected = 3}\n'
                    'alert_on = ["over", "unexpected", "expected"]\n'
                    'alert_username = "root"\nalert_password = "s3cret-pw"\n')
    (p,) = load(path).portals
    assert (p.alert, p.alert_gpo, p.alert_on) == (
        "impinj-gpo", (("expected", 3), ("over", 1), ("unexpected", 2)),
        ("over", "unexpected", "expected"))
    assert "s3cret-pw" not in repr(p)  # the password is not shown
    plain = PortalConfig(name="d", location="L")
    plain.check()
    assert (plain.alert, plain.alert_on, plain.alert_queue) == ("log", ("over", "unexpected"), 64)


def test_the_agent_alerts_offline_and_counts_in_its_metrics(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    """The whole agent: a serial RFID reader on a pty at DOCK-1, the receipt kept before the
    agent started, no broker reachable; an over and an unexpected case reach the program."""
    from floorsync.devices.sim import sgtin96_hex

    script, out = recorder
    with Outbox(tmp_path / "outbox.db") as outbox:
        give(book_for(outbox, SITE), receipt("ASN-7", line(1, DOOR_GTIN), location="DOCK-1"))
    master, slave = open_pty()
    other = sgtin96_hex("0614141", "812346", 1)
    config = PortalConfig(name="dock-1", location="DOCK-1", reader="serial", port=slave,
                          line_format="{epc},{antenna},{rssi}", quiet_s=0.3, min_reads=2,
                          alert="command",
                          alert_command=(sys.executable, str(script), str(out)))
    with EdgeAgent(_config(tmp_path, portals=(config,))) as agent:
        wait_until(lambda: agent.device_online.get("dock-1") is True, 10, "the reader online")
        for _ in range(5):
            for tag in (case(1), case(2), other):
                os.write(master, f"{tag},1,-55\r\n".encode())
        wait_until(lambda: len(heard(out)) == 2, 10, "two alerts")
        wait_until(lambda: agent.door_alerts["dock-1"].counts()[1]["sent"] == 2, 5, "counted")
        metrics = {(m.name, s.labels.get("check") or s.labels.get("outcome")): s.value
                   for m in EdgeCollector(agent).collect() for s in m.samples
                   if m.name.startswith("floorsync_edge_door_alert")}
    os.close(master)
    assert sorted(h["args"][1] for h in heard(out)) == ["over", "unexpected"]
    assert metrics[("floorsync_edge_door_alerts", "over")] == 1
    assert metrics[("floorsync_edge_door_alerts", "unexpected")] == 1
    assert metrics[("floorsync_edge_door_alerts", "expected")] == 0
    assert metrics[("floorsync_edge_door_alert_outputs", "sent")] == 2
    assert metrics[("floorsync_edge_door_alert_outputs", "dropped")] == 0
