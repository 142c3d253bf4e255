"""An embedded MQTT broker (amqtt, MQTT 3.1.1 only) for a single small site and the demo.

amqtt is asyncio; the rest of the service is threads, so the broker gets a thread with its own
event loop. Production sites run mosquitto instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

from floorsync.server.errors import ServerError

START_TIMEOUT_S = 10.0
SNAPSHOT_SUBSCRIPTIONS = True  # the work-around below; the test turns it off to see the bug


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Subscriptions(dict[str, Any]):
    """amqtt's table of subscriptions, iterated over a snapshot.

    amqtt 0.12 walks this dict while awaiting (``Broker._run_broadcast``, and the retained
    messages a resumed persistent session is sent), so a client subscribing or leaving meanwhile
    ended the walk with "dictionary changed size during iteration": a broadcast or a handheld's
    reconnection failed (seen in the demo; ``tests/test_broker.py`` reproduces it). A snapshot is
    what those loops mean: a filter added meanwhile gets the next message.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(super().values())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


class EmbeddedBroker:
    """amqtt on ``host:port`` in a background thread; ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

    def start(self) -> EmbeddedBroker:
        """Start and wait until the listener accepts connections.

        No probe connection: amqtt logs an error for a client that connects and says nothing.
        """
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._error is not None:
            self.stop()
            raise ServerError(f"embedded broker did not start on {self.url}: {self._error}")
        return self  # broker.start() returned: the listener socket is bound and listening

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._broker = Broker(self.config(), loop=loop)
            if SNAPSHOT_SUBSCRIPTIONS:
                broker: Any = self._broker
                broker._subscriptions = _Subscriptions(broker._subscriptions)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        """Shut the broker down on its own loop, then end the loop and the thread."""
        loop, broker, thread = self._loop, self._broker, self._thread
        if loop is not None and broker is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                future.result(START_TIMEOUT_S)
            except Exception:
                logging.getLogger(__name__).exception("embedded broker did not shut down cleanly")
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(START_TIMEOUT_S)
        self._loop = self._broker = self._thread = None
        self._started.clear()
        self._error = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
