"""Server-Sent Events for the dashboard: one poller per process, fanned out to every stream.

The poller is a thread (one per process, however many tabs watch) that asks the store every
``interval_s`` whether anything was committed (``feed.version``), and only then reads what the
panels show. Polling the database, not hooking this process's writes, is what lets a replica
show what another replica ingested. Each panel goes out as one SSE event, encoded once and
shared by every subscriber, and only when it changed; door passes go out as they are found.

Subscribers are asyncio queues of at most ``QUEUE_FRAMES`` frames on the server's event loop. A
subscriber that falls that far behind (a tab that stopped reading, a stalled network) is
dropped: its stream ends, and the browser's EventSource reconnects and starts again from the
current panels. Memory never grows with a slow tab. A new subscriber first gets the latest
frame of every panel, so a page is whole from its first second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from floorsync.server.dashboard import feed
from floorsync.server.errors import StoreError
from floorsync.server.ledger import Store

log = logging.getLogger(__name__)

INTERVAL_S = 0.4  # how often the poller asks the store whether anything changed
DOCUMENTS_EVERY_S = 2.0  # receipts, orders, backorders, counts and backlog: at most this often
QUEUE_FRAMES = 64  # frames a subscriber may fall behind before it is dropped
KEEPALIVE_S = 15.0  # a comment line this often, so dead connections and idle proxies show
MAX_STREAMS = 1000  # streams one process serves at once (503 beyond)
PASSES_KEPT = 30  # door passes a new subscriber is shown
PASSES_READ = 200  # ledger rows a tick reads at most (a drain's older rows are skipped)
RETRY_MS = 2000  # how soon an EventSource reconnects after its stream ended

_CLOSED = b""  # the sentinel that ends a stream


class StreamsFull(Exception):
    """More streams than ``MAX_STREAMS``, or the hub is closing."""


def frame(event: str, data: Any) -> bytes:
    """One SSE event; JSON has no raw newlines, so one ``data:`` line is always enough."""
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"event: {event}\ndata: {body}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[bytes] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_FRAMES))
    dropped: bool = False


class LiveHub:
    """The process's poller and its subscribers. ``store_of`` gives the store once the app's
    lifespan opened it (the hub exists from ``create_app`` on)."""

    def __init__(self, store_of: Callable[[], Store], online_after_s: float, *,
                 interval_s: float = INTERVAL_S, documents_every_s: float = DOCUMENTS_EVERY_S,
                 max_streams: int = MAX_STREAMS) -> None:
        self._store_of = store_of
        self.online_after_s = online_after_s
        self.interval_s = interval_s
        self.documents_every_s = documents_every_s
        self.max_streams = max_streams
        self._subscribers: set[Subscriber] = set()
        self._latest: dict[str, bytes] = {}  # event name -> its latest frame (event loop only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the poller thread's start and stop
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self.dropped = 0  # subscribers dropped for falling behind
        self.ticks = 0  # poller ticks that found a change (tests, measurements)

    # --- subscribers (event loop) ----------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        if self._closed or len(self._subscribers) >= self.max_streams:
            raise StreamsFull("the server is stopping" if self._closed else
                              f"{self.max_streams} live streams are open")
        self._loop = asyncio.get_running_loop()
        sub = Subscriber()
        for data in self._latest.values():
            sub.queue.put_nowait(data)
        self._subscribers.add(sub)
        self._ensure_poller()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    async def frames(self, sub: Subscriber) -> AsyncIterator[bytes]:
        """A subscriber's stream, until it is dropped, the hub closes or the client leaves."""
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while True:
                try:
                    data = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if data is _CLOSED:
                    return
                yield data
        finally:
            self.unsubscribe(sub)

    def _fanout(self, name: str, data: bytes, latest: bytes | None) -> None:
        """In the event loop: remember ``latest`` for new subscribers, send ``data`` to all."""
        if latest is not None:
            self._latest[name] = latest
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(data)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.dropped += 1
        self._subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(_CLOSED)
        log.info("dropped a live stream %d frames behind (it reconnects)", QUEUE_FRAMES)

    def _end_all(self) -> None:
        for sub in list(self._subscribers):
            self._subscribers.discard(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(_CLOSED)

    def close(self) -> None:
        """End every stream and the poller (any thread, a signal handler too): a graceful
        shutdown waits for responses to finish, and a stream otherwise never would."""
        self._closed = True
        self._stop.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self._end_all)

    # --- the poller (its own thread) -------------------------------------------------------

    def _ensure_poller(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="floorsync-live",
                                            daemon=True)
            self._thread.start()

    def _publish(self, name: str, data: bytes, latest: bytes | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, name, data, latest)
        except RuntimeError:  # the loop closed between the check and the call
            self._stop.set()

    def _run(self) -> None:
        """Tick while anyone watches. The thread stays (its SQLite reader is this thread's
        connection; a thread per watcher would leave one behind each time) until ``close``."""
        poller = _Poller(self)
        while not self._stop.wait(self.interval_s):
            if not self._subscribers:
                continue
            try:
                poller.tick()
            except StoreError as exc:
                log.warning("live dashboard: %s (trying again)", exc)
            except Exception:
                log.exception("live dashboard poller failed a tick")


class _Poller:
    """One poller thread's state: what it last read and last sent."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        self.version: int | None = None
        self.last_movement: int | None = None
        self.passes: deque[dict[str, Any]] = deque(maxlen=PASSES_KEPT)
        self.device_rows: list[Any] = []
        self.sent: dict[str, bytes] = {}
        self.documents_at = 0.0
        self.documents_due = True
        self.rate: deque[tuple[float, int]] = deque(maxlen=25)  # (monotonic, last movement id)
        self.lag: deque[float] = deque(maxlen=PASSES_READ)  # recent rows' received - happened

    def send(self, name: str, data: Any) -> None:
        """A panel: sent only when it differs from what this poller sent last."""
        encoded = frame(name, data)
        if self.sent.get(name) != encoded:
            self.sent[name] = encoded
            self.hub._publish(name, encoded, encoded)

    def tick(self) -> None:
        store = self.hub._store_of()
        now = time.monotonic()
        current = feed.version(store)
        changed = current != self.version
        if changed:
            self.version = current
            self.hub.ticks += 1
            self.device_rows = store.devices()
            self._ledger(store, now)
            self.send("exceptions", feed.open_exceptions(store))
            self.documents_due = True
        if self.documents_due and now - self.documents_at >= self.hub.documents_every_s:
            self.documents_at, self.documents_due = now, False
            for name, data in feed.documents(store).items():
                self.send(name, data)
        if self.last_movement is not None:
            self.rate.append((now, self.last_movement))
        # online also turns false by the clock alone (a device silent past online_after_s)
        self.send("devices", feed.devices(self.device_rows, self.hub.online_after_s))
        self._send_lag(now)

    def _ledger(self, store: Store, now: float) -> None:
        upto = feed.last_movement(store)
        first = self.last_movement is None
        after = upto - PASSES_READ if first else self.last_movement or 0
        if upto < after:  # the store was restored or rebuilt under us
            after, first = max(upto - PASSES_READ, 0), True
            self.passes.clear()
        rows = feed.movements_after(store, after, upto, PASSES_READ) if upto > after else []
        self.last_movement = upto
        self.lag.extend(x for x in (r.lag_s for r in rows) if x is not None)
        fresh = [r.as_json() for r in rows if feed.is_door_pass(r)]
        self.passes.extend(fresh)
        snapshot = frame("passes", {"items": list(self.passes), "replace": True})
        if fresh and not first:
            delta = frame("passes", {"items": fresh[-PASSES_KEPT:], "replace": False})
            self.hub._publish("passes", delta, snapshot)
        elif first or fresh:
            self.hub._publish("passes", snapshot, snapshot)

    def _send_lag(self, now: float) -> None:
        """Sync lag: how far behind the floor the newest rows arrived, and the oldest event an
        edge still holds; and how fast the ledger grows."""
        lags = sorted(self.lag)
        rate = None
        if len(self.rate) >= 2 and self.rate[-1][0] > self.rate[0][0]:
            (t0, m0), (t1, m1) = self.rate[0], self.rate[-1]
            rate = round((m1 - m0) / (t1 - t0), 1)
        holding = [r.oldest_unsynced_s for r in self.device_rows
                   if r.oldest_unsynced_s is not None and r.backlog]
        self.send("lag", {
            "rows": len(lags),
            "p50_s": lags[len(lags) // 2] if lags else None,
            "max_s": lags[-1] if lags else None,
            "oldest_unsynced_s": max(holding) if holding else None,
            "backlog": sum(r.backlog or 0 for r in self.device_rows),
            "ledger_rows_per_s": rate,
            "last_movement": self.last_movement,  # the page re-reads its stock page on a move
        })
