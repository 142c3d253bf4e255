"""MQTT ingest: batches in, application acks out, PUBACK only after the commit.

Everything runs in callbacks on paho's one network thread (paho is not thread-safe), so messages
are applied, acked and PUBACKed in the order they arrived. A bad message is recorded and acked as
rejected; it never stops the consumer. A failing database is different: nothing is PUBACKed, the
client drops the connection and comes back, and the broker redelivers what was not acknowledged.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from paho.mqtt.client import (
    CallbackAPIVersion,
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTProtocolVersion,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge import wire
from server.errors import StoreError
from server.ledger import Store
from server.settings import Settings, broker_address

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
KEEPALIVE_S = 30
RESTART_AFTER_STORE_FAILURE_S = 1.0
EVENTS_FILTER = f"{wire.TOPIC_ROOT}/+/+/events"
STATUS_FILTER = f"{wire.TOPIC_ROOT}/+/+/status"


class MqttIngest:
    """Consumes ``floorsync/v1/+/+/events`` and ``/status`` into ``store``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        if settings.broker is None:
            raise ValueError("MqttIngest needs settings.broker")
        self._store = store
        self._settings = settings
        self._host, self._port = broker_address(settings.broker)
        self._v5 = settings.mqtt_protocol == "5"
        group = settings.shared_group
        self._events_filter = f"$share/{group}/{EVENTS_FILTER}" if group else EVENTS_FILTER
        self._client = self._new_client()
        self._ready = threading.Event()
        self._subscribe_mid: int | None = None
        self._halted = False  # the store failed: ack nothing until we have reconnected
        self._stopping = False
        self._life = threading.Lock()
        self._restart_timer: threading.Timer | None = None

    def _new_client(self) -> Client:
        if self._v5:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._settings.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
                manual_ack=True,
            )
        else:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._settings.client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and subscribed: messages are flowing."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> MqttIngest:
        """Connect in the background; paho retries until the broker answers."""
        with self._life:
            self._stopping = False
            self._connect_async()
            self._client.loop_start()
        return self

    def stop(self) -> None:
        with self._life:
            self._stopping = True
            if self._restart_timer is not None:
                self._restart_timer.cancel()
            self._client.disconnect()
            self._client.loop_stop()
            self._ready.clear()

    def __enter__(self) -> MqttIngest:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _connect_async(self) -> None:
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self._client.connect_async(
                self._host, self._port, KEEPALIVE_S, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(self._host, self._port, KEEPALIVE_S)

    def _restart(self) -> None:
        """After a store failure: a fresh connection, so the broker redelivers the un-PUBACKed."""
        with self._life:
            if self._stopping:
                return
            self._client.loop_stop()
            self._connect_async()
            self._client.loop_start()

    # --- callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker %s:%s refused the connection: %s", self._host, self._port, reason)
            return
        self._halted = False
        # Every time: a shared subscription does not survive a broker restart.
        _, self._subscribe_mid = client.subscribe([(self._events_filter, 1), (STATUS_FILTER, 1)])
        log.info("connected to %s:%s (session present: %s)", self._host, self._port,
                 flags.session_present)

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused our subscriptions: %s", failed)
        else:
            self._ready.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._ready.clear()
        if self._stopping:
            return
        log.warning("disconnected from %s:%s: %s", self._host, self._port, reason)
        if self._halted:
            timer = threading.Timer(RESTART_AFTER_STORE_FAILURE_S, self._restart)
            timer.daemon = True
            self._restart_timer = timer
            timer.start()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        if self._halted:
            return  # not PUBACKed: the broker redelivers it after we reconnect
        try:
            self._handle(client, msg)
        except StoreError:
            log.exception("store failed on %s; not acknowledging, reconnecting", msg.topic)
            self._halted = True
            client.disconnect()
            return
        except Exception:
            # A bug must not kill the consumer. No application ack was sent, so the edge
            # re-sends later; the PUBACK below keeps one poison message from blocking the rest.
            log.exception("unexpected error handling a message on %s", msg.topic)
        client.ack(msg.mid, msg.qos)

    # --- handlers -------------------------------------------------------------------------

    def _handle(self, client: Client, msg: MQTTMessage) -> None:
        payload = bytes(msg.payload)
        try:
            site, device, kind = wire.parse_topic(msg.topic)
        except wire.WireError as exc:
            self._store.record_rejection(
                source="mqtt", reason=str(exc), payload=payload, topic=msg.topic
            )
            return
        if kind == "events":
            results = self._events(site, device, msg.topic, payload)
            if results:
                ack = wire.encode_ack(wire.Ack(device, results))
                client.publish(wire.acks_topic(site, device), ack, qos=1)
        elif kind == "status":
            self._status(site, device, msg.topic, payload)

    def _events(
        self, site: str, device: str, topic: str, payload: bytes
    ) -> tuple[wire.Result, ...]:
        """Decode, check the sender, apply; the results to ack to the topic's device."""
        try:
            batch = wire.decode_batch(payload)
        except wire.WireError as exc:
            return self._reject(str(exc), payload, topic, site, device, wire.salvage_ids(payload))
        if (batch.site, batch.device) != (site, device):
            reason = (
                f"spoofed: payload device {batch.site}/{batch.device}"
                f" on topic of device {site}/{device}"
            )
            ids = [e.id for e in batch.events] + [b.id for b in batch.invalid if b.id]
            return self._reject(reason, payload, topic, site, device, ids)
        return self._store.apply_batch(batch, source="mqtt", topic=topic, raw=payload)

    def _reject(
        self, reason: str, payload: bytes, topic: str, site: str, device: str, ids: list[str]
    ) -> tuple[wire.Result, ...]:
        log.warning("rejected batch on %s: %s", topic, reason)
        self._store.record_rejection(
            source="mqtt", reason=reason, payload=payload, topic=topic, site=site, device=device,
            event_ids=ids,
        )
        return wire.results_for(ids, "rejected", reason)

    def _status(self, site: str, device: str, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained status
        try:
            status = wire.decode_status(payload)
        except wire.WireError as exc:
            self._store.record_rejection(
                source="mqtt", reason=str(exc), payload=payload, topic=topic, site=site,
                device=device,
            )
            return
        self._store.update_presence(site, device, status)
