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
- ``manual_ack``: a message is PUBACKed only once its reads are durable. With a ``commit``
  callable (the agent's door journal), messages are acknowledged in receive order after
  ``commit()`` returned, called once per batch (``batch`` messages or ``linger_s`` after the first
  one, whichever comes first; at once when the socket holds nothing more): one fsync covers
  a burst of messages. If ``commit`` raises, nothing of
  the batch is acknowledged and the session is dropped, so the broker delivers it again after the
  reconnect. Without ``commit``, a message is acknowledged once `on_read` returned for all its
  reads. A crash before the PUBACK gets the message redelivered (at least once; duplicates are
  normal and not removed here).
- A stable client id (the caller derives it from site, device and reader name), so a restarted
  edge resumes its session and receives what the broker queued meanwhile. MQTT 5 clients announce
  a Receive Maximum of ``receive_max`` (the broker's own ``max_inflight_messages`` caps it: raise
  it on the reader-side broker, see deploy/mosquitto).
- Reconnects are ours (`supervise`: capped, jittered backoff), not paho's fixed doubling.
- Bad messages are reported to `on_error` and acknowledged like any other, so they do not come
  back for ever: payloads over ``max_payload`` bytes (default 1 MiB) unparsed, and a parser that
  raises (a bug: the parsers report bad input, they do not raise) with its exception.
- TLS with ``mqtts://`` (port 8883 by default): the broker's certificate must chain to
  ``ca_file`` (or the system trust store) and name the broker's host; ``cert_file``/``key_file``
  for a broker that wants client certificates. ``username``/``password`` are the MQTT login.
  A broker that fails verification or refuses the login is an offline reader retried with the
  capped backoff, its reason logged once (`supervise`), never a crash: the cause is on the
  operator's side, and the reader comes online by itself once it is fixed.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from floorsync.devices.base import DeviceError, DeviceGone
from floorsync.devices.rfid import tls
from floorsync.devices.rfid.base import (
    OnError,
    OnRead,
    OnState,
    Parsed,
    ParseError,
    Parser,
    clip,
    report_errors,
    supervise,
)


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (or ``host:port``, or ``mqtts://``) -> (host, port)."""
    return broker_address(url)[:2]


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls): ``mqtts://`` is TLS with port 8883 by default, ``mqtt://`` 1883."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"broker URL has a bad port: {url!r}") from None
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise DeviceError(f"broker must look like mqtt://host:port or mqtts://host:port "
                          f"(got {url!r})")
    secure = parts.scheme in ("mqtts", "ssl")
    return parts.hostname, port or (8883 if secure else 1883), secure


# CONNACK reasons meaning the login was refused: MQTT 3.1.1 codes 4 and 5, MQTT 5 134 and 135.
_LOGIN_REFUSED = (4, 5, 134, 135)


class _BufferedClient(mqtt.Client):
    """paho's client, reading its socket 64 KiB at a time.

    paho asks the socket for each packet's first byte, then each byte of its length, then the
    rest: three or more ``recv`` calls a message, each releasing and taking back the GIL, which
    the door's thread competes for. Served from a buffer, a burst of small messages costs one
    ``recv``. While the buffer holds data the reader calls ``loop_read`` (``select`` would not
    see it); ``reset_buffer`` at every new connection. Relies on paho 2.x's ``_sock_recv``
    (the dependency is pinned below 3).
    """

    _rbuf = b""
    _rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)  # BlockingIOError and the rest, as paho expects
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos:end]
        self._rpos = min(end, len(self._rbuf))
        return out

    @property
    def buffered(self) -> bool:
        return self._rpos < len(self._rbuf)

    def reset_buffer(self) -> None:
        self._rbuf, self._rpos = b"", 0


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
        batch: int = 1000,
        linger_s: float = 0.003,
        receive_max: int = 1000,
        max_payload: int = 1024 * 1024,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.host, self.port, secure = broker_address(broker_url)
        if not secure and (ca_file or cert_file or key_file):
            raise DeviceError(f"{name}: ca_file/cert_file/key_file need an mqtts:// broker "
                              f"(got {broker_url!r})")
        # Built now: a missing or mismatched file is a configuration error at start.
        self.tls_context: ssl.SSLContext | None = (
            tls.client_context(ca_file, cert_file, key_file, what=f"{name}: broker TLS")
            if secure else None
        )
        self.max_payload = max_payload
        self.batch = batch
        self.linger_s = linger_s
        # Monotonic time by which everything the broker had sent was handed over: a consumer
        # may take silence up to here as the reader's (not as this thread being behind).
        self.caught_up_at: float | None = None
        self.receive_max = receive_max
        self.topic = topic
        self.parser = parser
        self.name = name
        self.client_id = client_id or f"floorsync-rfid-{name}"
        self.on_error = on_error
        self.protocol = protocol
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.username = username
        self.password = password
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff

    acknowledges = True  # run() takes a commit: acknowledges only what is durable

    def _parse(self, payload: bytes | bytearray) -> Parsed:
        """The message's reads and errors; too large or a failing parser: one error, no reads."""
        if len(payload) > self.max_payload:
            reason = f"payload of {len(payload)} bytes over the {self.max_payload}-byte cap"
            return Parsed(errors=[ParseError(reason, clip(bytes(payload[:512])))])
        try:
            return self.parser(bytes(payload))
        except Exception as exc:  # a parser bug must not silence the reader (FIELD-NOTES, paho)
            reason = f"parser failed: {type(exc).__name__}: {exc}"[:300]
            return Parsed(errors=[ParseError(reason, clip(bytes(payload)))])

    def _client(self, on_read: OnRead, state: dict[str, Any],
                unacked: list[tuple[int, int]] | None) -> _BufferedClient:
        v5 = self.protocol == 5
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_context is not None:
            client.tls_set_context(self.tls_context)

        def on_connect(
            client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any
        ) -> None:
            state["answered"] = True  # the broker answered the login (CONNACK)
            if reason.is_failure:
                hint = ""
                if reason.value in _LOGIN_REFUSED:
                    hint = " (check the portal's username and password)"
                state["refused"] = f"{reason}{hint}"
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
            state["received"] = state.get("received", 0) + 1
            parsed = self._parse(message.payload)
            report_errors(self.on_error, parsed.errors)
            for read in parsed.reads:
                on_read(read)
            # Only now: if on_read raised, the message stays unacknowledged and comes again.
            if message.qos > 0:
                if unacked is None:
                    client.ack(message.mid, message.qos)
                else:  # acknowledged after the next commit, in receive order
                    unacked.append((message.mid, message.qos))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        return client

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None,
            commit: Callable[[], object] | None = None) -> None:
        """Subscribe and deliver reads until `stop`; reconnect with backoff after losses.

        ``commit``: makes every read delivered so far durable; messages are acknowledged only
        after it returned (see the module docstring)."""
        state: dict[str, Any] = {}
        unacked: list[tuple[int, int]] | None = [] if commit is not None else None
        client = self._client(on_read, state, unacked)

        def settle() -> None:
            """Commit what was delivered, then acknowledge it (receive order)."""
            assert commit is not None and unacked is not None
            try:
                commit()
            except Exception as exc:
                unacked.clear()  # not acknowledged: the broker sends them again
                raise DeviceGone(f"{self.name}: reads not kept, not acknowledged ({exc}); "
                                 "the broker delivers them again after the reconnect") from exc
            for mid, qos in unacked:
                client.ack(mid, qos)
            unacked.clear()

        def session(mark_online: Callable[[], None]) -> None:
            state.clear()
            client.reset_buffer()  # bytes of a connection that is gone
            if unacked:
                unacked.clear()  # ids of a connection that is gone
            properties = None
            kwargs: dict[str, Any] = {}
            if self.protocol == 5:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self.session_expiry
                properties.ReceiveMaximum = self.receive_max
                kwargs = {"clean_start": False, "properties": properties}
            try:
                client.connect(self.host, self.port, self.keepalive, **kwargs)
            except (OSError, ValueError) as exc:
                raise DeviceGone(
                    f"{self.name}: cannot connect to {self.host}:{self.port}: "
                    f"{tls.describe(exc)}"
                ) from exc
            since = 0.0  # when the oldest unacknowledged message came
            try:
                while not stop.is_set():
                    waiting = len(unacked) if unacked is not None else 0
                    started, before = time.monotonic(), state.get("received", 0)
                    if client.buffered:  # data already read from the socket
                        rc = client.loop_read()
                    else:
                        rc = client.loop(timeout=0.0 if waiting else 0.05)
                    if unacked:
                        # Group commit: settle once the socket has nothing more for us right
                        # now (a burst is one commit), at `batch`, or `linger_s` at the latest.
                        now = time.monotonic()
                        if not since:
                            since = now
                        if (len(unacked) == waiting or len(unacked) >= self.batch
                                or now - since >= self.linger_s):
                            settle()
                            since = 0.0
                    if not unacked and state.get("received", 0) == before:
                        self.caught_up_at = started  # all it had by then is handed over
                    if state.get("refused"):
                        raise DeviceGone(f"{self.name}: broker refused: {state['refused']}")
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or state.get("lost"):
                        lost = state.get("lost", rc)
                        if not state.get("answered"):
                            raise DeviceGone(
                                f"{self.name}: the broker closed the connection before answering "
                                f"the login ({lost}): check mqtt:// or mqtts:// for its port, "
                                "and whether it requires a client certificate (cert_file)")
                        raise DeviceGone(f"{self.name}: connection lost: {lost}")
                    if state.get("connected"):
                        mark_online()
            finally:
                if unacked and stop.is_set() and state.get("connected"):
                    with contextlib.suppress(DeviceGone):  # a clean stop: keep, acknowledge
                        settle()
                elif commit is not None:
                    # received, not acknowledged: kept (a redelivery is a duplicate read)
                    with contextlib.suppress(Exception):
                        commit()
                client.disconnect()  # a no-op when the connection is already gone
                if stop.is_set():
                    client.loop(timeout=0.1)

        supervise(
            session, stop, on_state, min_backoff=self.min_backoff, max_backoff=self.max_backoff
        )
