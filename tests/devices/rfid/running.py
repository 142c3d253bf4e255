"""A tag reader running in a thread as the edge runs it, its reads, states and errors in
queues: what the reader tests of every kind (serial, MQTT, HTTP) look at."""

from __future__ import annotations

import queue
import threading
from typing import Generic, Protocol, TypeVar

from floorsync.devices.base import TagRead
from floorsync.devices.rfid.base import OnError, TagReader


class Reporting(TagReader, Protocol):
    on_error: OnError | None


R = TypeVar("R", bound=Reporting)


class Running(Generic[R]):
    """``reader.run`` in a thread; ``close`` stops it and asserts it ended within
    ``join_s`` seconds."""

    join_s = 10.0

    def __init__(self, reader: R) -> None:
        self.reader = reader
        self.reads: queue.Queue[TagRead] = queue.Queue()
        self.states: queue.Queue[bool] = queue.Queue()
        self.errors: queue.Queue[tuple[str, bytes]] = queue.Queue()
        reader.on_error = lambda reason, raw: self.errors.put((reason, raw))
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=reader.run, args=(self.reads.put, self.stop, self.states.put))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=self.join_s)
        assert not self.thread.is_alive()
