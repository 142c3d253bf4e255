"""A Zebra GPO "on" whose acknowledgement comes after ``alert_timeout_s`` (edge/dooralert.py
``ZebraGpo``): the alert is failed, but the "on" stays queued in the MQTT client and reaches the
reader late, so its "off" must follow it. A real mosquitto stopped (SIGSTOP) while the "on" is
sent and resumed after the timeout stands in for a broker that answers late."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
import time
from typing import Any

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage

from floorsync.edge.dooralert import DoorAlert, make_alerter
from floorsync.localbroker import Mosquitto
from tests.e2e.conftest import wait_until
from tests.edge.docfixtures import case_uri
from tests.edge.test_door_scenarios import door

TOPIC = "zebra/fx9600/mcmds"


def test_an_on_acknowledged_late_is_still_turned_off(mosquitto: Mosquitto) -> None:
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    reader = Client(CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    reader.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    reader.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Client, userdata: Any, msg: MQTTMessage) -> None:
        got.put(json.loads(msg.payload)["payload"])

    reader.on_message = on_message
    reader.connect("127.0.0.1", mosquitto.port)
    reader.loop_start()
    assert subscribed.wait(10)
    config = door("door-a", "DOCK-A", antennas={"1": "door"}, direction="in",
                  reader="zebra-mqtt", broker=mosquitto.url, topic="zebra/fx9600/data",
                  alert="zebra-gpo", alert_topic=TOPIC, alert_gpo={"over": 3, "unexpected": 4},
                  alert_pulse_ms=200, alert_timeout_s=0.5)
    alerter = make_alerter(config, "floorsync-wh1-edge-door-a-alert").start()
    assert mosquitto.process is not None
    pid = mosquitto.process.pid
    try:
        output: Any = alerter.output
        wait_until(lambda: output.client.is_connected(), 10, "the alert client connected")
        os.kill(pid, signal.SIGSTOP)
        try:
            alert = DoorAlert("door-a", "DOCK-A", "over", case_uri(1), 1, "ASN-1", "e1", "t",
                              "OVER")
            assert alerter.fire(alert)
            wait_until(lambda: alerter.counts()[1]["failed"] == 1, 5, "the late on failed")
            assert "not acknowledged" in (alerter.last_error or "")
            time.sleep(1.0)  # the off is due meanwhile
        finally:
            os.kill(pid, signal.SIGCONT)
        heard = [got.get(timeout=10)]
        with contextlib.suppress(queue.Empty):
            heard.append(got.get(timeout=3))
    finally:
        alerter.stop()
        reader.loop_stop()
        reader.disconnect()
    assert heard == [{"port": 3, "state": True}, {"port": 3, "state": False}]
