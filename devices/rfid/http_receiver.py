"""Tag reads POSTed by fixed readers (Impinj webhook, Zebra IoT Connector HTTP POST endpoint).

A stdlib `ThreadingHTTPServer` takes POSTed JSON (one event, an array, or JSON lines) and hands
the body to a parser (`parse_impinj`, `parse_zebra`, ...). Answers:

- 204 once every read of the body has been handed to `on_read` and, with a ``commit`` callable
  (the agent's door journal), ``commit()`` returned: the reads are durable before the reader is
  told we have them (a reader retrying after a lost answer gets at-least-once, never less);
  unusable parts of a body that also held reads go to `on_error` and are not grounds for a retry
  (that would only duplicate the good reads);
- 503 with ``Retry-After`` when ``commit`` failed (journal full or failing): the reader sends the
  body again later;
- 400 with the reason as plain text when nothing in the body could be used (garbage, truncated
  JSON, missing fields), also reported to `on_error`;
- 411 without Content-Length, 413 over `max_body`, 405 for other methods.

Handler threads run concurrently, but `on_read`/`on_error` are called under one lock, one call
at a time, like every other reader. No TLS or authentication here: bind to loopback or a
dedicated reader network, or put a proxy in front.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from floorsync.devices.base import DeviceGone
from floorsync.devices.rfid.base import OnError, OnRead, OnState, Parser, report_errors, supervise


class HttpTagReceiver:
    """Listens on (host, port); `port=0` picks a free port, readable as `.port` once listening."""

    def __init__(
        self,
        host: str,
        port: int,
        parser: Parser,
        *,
        name: str,
        on_error: OnError | None = None,
        max_body: int = 16 * 1024 * 1024,
        min_backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.parser = parser
        self.name = name
        self.on_error = on_error
        self.max_body = max_body
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.listening = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}  # handler thread -> when its request came

    @property
    def caught_up_at(self) -> float:
        """Monotonic time by which every request received was handed over (see MqttTagReader)."""
        times = list(self._inflight.values())
        return min(times) if times else time.monotonic()

    acknowledges = True  # run() takes a commit: answers 2xx only for what is durable

    def _handler(self, on_read: OnRead,
                 commit: Callable[[], object] | None) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the access log would be one line per reader push

            def _answer(self, status: int, reason: str = "", retry_after: int | None = None
                        ) -> None:
                body = (reason + "\n").encode("utf-8") if reason else b""
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                if body:
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def do_POST(self) -> None:
                me = threading.get_ident()
                receiver._inflight[me] = time.monotonic()
                try:
                    self._post()
                finally:
                    receiver._inflight.pop(me, None)

            def _post(self) -> None:
                length_header = self.headers.get("Content-Length")
                if length_header is None:
                    self.close_connection = True
                    receiver._error("no Content-Length", self.requestline.encode("latin-1"))
                    self._answer(411, "Content-Length required")
                    return
                try:
                    length = int(length_header)
                    if length < 0:
                        raise ValueError
                except ValueError:
                    self.close_connection = True
                    receiver._error(f"bad Content-Length: {length_header[:40]!r}",
                                    self.requestline.encode("latin-1"))
                    self._answer(400, "bad Content-Length")
                    return
                if length > receiver.max_body:
                    self.close_connection = True  # body unread: the request line is the sample
                    receiver._error(f"body of {length} bytes over the {receiver.max_body}-byte cap",
                                    self.requestline.encode("latin-1"))
                    self._answer(413, f"body over {receiver.max_body} bytes")
                    return
                body = self.rfile.read(length)
                if len(body) < length:
                    self.close_connection = True
                    receiver._error("truncated body", body)
                    return
                if not body.strip():
                    receiver._error("empty body", body)
                    self._answer(400, "empty body")
                    return
                parsed = receiver.parser(body)
                with receiver._lock:
                    report_errors(receiver.on_error, parsed.errors)
                    for read in parsed.reads:
                        on_read(read)
                    try:
                        if commit is not None and parsed.reads:
                            commit()
                    except Exception as exc:
                        failed: Exception | None = exc
                    else:
                        failed = None
                if failed is not None:
                    self.close_connection = True
                    self._answer(503, f"reads not kept, send them again: {failed}",
                                 retry_after=1)
                    return
                if parsed.reads or not parsed.errors:
                    self._answer(204)  # also for bodies holding only non-tag events
                    return
                reasons = "; ".join(e.reason for e in parsed.errors[:5])
                self._answer(400, f"no tag reads: {reasons}")

            def _not_allowed(self) -> None:
                self.send_response(405)
                self.send_header("Allow", "POST")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed

        return Handler

    def _error(self, reason: str, raw: bytes) -> None:
        with self._lock:
            if self.on_error is not None:
                self.on_error(reason, raw[:512])

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None,
            commit: Callable[[], object] | None = None) -> None:
        """Serve until `stop`; if the port cannot be bound, retry with backoff (offline).

        ``commit``: makes the reads handed over so far durable; a body is answered 2xx only
        after it returned."""

        def session(mark_online: Callable[[], None]) -> None:
            try:
                server = ThreadingHTTPServer((self.host, self.port),
                                             self._handler(on_read, commit))
            except OSError as exc:
                raise DeviceGone(
                    f"{self.name}: cannot listen on {self.host}:{self.port}: {exc}"
                ) from exc
            server.daemon_threads = True
            self.port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            thread.start()
            self.listening.set()
            mark_online()
            try:
                stop.wait()
            finally:
                self.listening.clear()
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)

        supervise(
            session, stop, on_state, min_backoff=self.min_backoff, max_backoff=self.max_backoff
        )
