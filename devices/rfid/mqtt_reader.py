"""Tag reads pushed by fixed readers over MQTT (Impinj IoT device interface, Zebra IoT Connector).

The reader publishes JSON to a broker; `MqttTagReader` subscribes with its own paho-mqtt 2.x
client and hands each message's payload to a parser (`parse_impinj`, `parse_zebra`, or any
`bytes -> Parsed`).

Choices (FIELD-NOTES, paho-mqtt 2.x):
- One thread owns the client: `run` drives `loop()` itself, so paho is never shared, and
  `on_read` runs on the thread that called `run`. An exception from `on_read` ends `run` with
  the message unacknowledged.
- Online (`on_state(True)`) once the broker confirmed the subscription (SUBACK), not at CONNACK.
- QoS 1 with a persistent session (MQTT 5 ``clean_start=False`` and a session expiry), so the
  broker queues reads while this host reconnects; subscription again in every `on_connect`.
- ``manual_ack``: a message is PUBACKed only after `on_read` returned for all its reads, in
  receive order, so a crash before that gets the message redelivered (at least once; duplicates
  are normal and not removed here).
- Reconnects are ours (`supervise`: capped, jittered backoff), not paho's fixed doubling.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.base import DeviceError, DeviceGone
from devices.rfid.base import OnError, OnRead, OnState, Parser, report_errors, supervise


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (or ``host:port``) -> (host, port); TLS is not handled here."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise DeviceError(f"broker must look like mqtt://host:port (got {url!r})")
    return parts.hostname, parts.port or 1883


class MqttTagReader:
    """Subscribes to `topic` on `broker_url` and parses every message with `parser`."""

    def __init__(
        self,
        broker_url: str,
        topic: str,
        parser: Parser,
        *,
        name: str,
        client_id: str | None = None,
        on_error: OnError | None = None,
        protocol: int = 5,
        keepalive: int = 30,
        session_expiry: int = 24 * 3600,
        username: str | None = None,
        password: str | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        self.topic = topic
        self.parser = parser
        self.name = name
        self.client_id = client_id or f"floorsync-rfid-{name}-{uuid.uuid4().hex[:8]}"
        self.on_error = on_error
        self.protocol = protocol
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.username = username
        self.password = password
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff

    def _client(self, on_read: OnRead, state: dict[str, Any]) -> mqtt.Client:
        v5 = self.protocol == 5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)

        def on_connect(
            client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any
        ) -> None:
            if reason.is_failure:
                state["refused"] = str(reason)
                return
            client.subscribe(self.topic, qos=1)

        def on_subscribe(
            client: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any
        ) -> None:
            # Online only once the broker confirmed the subscription (SUBACK).
            failed = [str(r) for r in reasons if r.is_failure]
            if failed:
                state["refused"] = f"subscription to {self.topic!r} refused: {failed[0]}"
            else:
                state["connected"] = True

        def on_disconnect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            state["connected"] = False
            state["lost"] = str(reason)

        def on_message(client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            parsed = self.parser(bytes(message.payload))
            report_errors(self.on_error, parsed.errors)
            for read in parsed.reads:
                on_read(read)
            # Only now: if on_read raised, the message stays unacknowledged and comes again.
            if message.qos > 0:
                client.ack(message.mid, message.qos)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        return client

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None) -> None:
        """Subscribe and deliver reads until `stop`; reconnect with backoff after losses."""
        state: dict[str, Any] = {}
        client = self._client(on_read, state)

        def session(mark_online: Callable[[], None]) -> None:
            state.clear()
            properties = None
            kwargs: dict[str, Any] = {}
            if self.protocol == 5:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self.session_expiry
                kwargs = {"clean_start": False, "properties": properties}
            try:
                client.connect(self.host, self.port, self.keepalive, **kwargs)
            except (OSError, ValueError) as exc:
                raise DeviceGone(
                    f"{self.name}: cannot connect to {self.host}:{self.port}: {exc}"
                ) from exc
            try:
                while not stop.is_set():
                    rc = client.loop(timeout=0.1)
                    if state.get("refused"):
                        raise DeviceGone(f"{self.name}: broker refused: {state['refused']}")
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or state.get("lost"):
                        raise DeviceGone(f"{self.name}: connection lost: {state.get('lost', rc)}")
                    if state.get("connected"):
                        mark_online()
            finally:
                client.disconnect()  # a no-op when the connection is already gone
                if stop.is_set():
                    client.loop(timeout=0.1)

        supervise(
            session, stop, on_state, min_backoff=self.min_backoff, max_backoff=self.max_backoff
        )
