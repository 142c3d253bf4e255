"""Tag reads POSTed by fixed readers (Impinj webhook, Zebra IoT Connector HTTP POST endpoint).

A stdlib `ThreadingHTTPServer` takes POSTed JSON (one event, an array, or JSON lines) and hands
the body to a parser (`parse_impinj`, `parse_zebra`, ...). Answers:

- 204 once every read of the body has been handed to `on_read` and, with a ``commit`` callable
  (the agent's door journal), ``commit()`` returned: the reads are durable before the reader is
  told we have them (a reader retrying after a lost answer gets at-least-once, never less);
  unusable parts of a body that also held reads go to `on_error` and are not grounds for a retry
  (that would only duplicate the good reads). A body sent again (a retry, or a replay) is read
  again: duplicate reads are normal for readers, the door's smoothing absorbs them;
- 503 with ``Retry-After`` when ``commit`` failed (journal full or failing): the reader sends the
  body again later;
- 400 with the reason as plain text when nothing in the body could be used (garbage, truncated
  JSON, missing fields, a broken chunked encoding), also reported to `on_error`;
- 401 with ``WWW-Authenticate`` when credentials are configured and the request lacks them or
  has wrong ones (checked before any byte of the body is read);
- 411 with neither Content-Length nor chunked Transfer-Encoding, 413 over `max_body` (a declared
  length at once, a chunked body as soon as its chunks pass the cap: never read whole), 405 for
  other methods.

Authentication is what Impinj and Zebra readers can send: HTTP Basic (``username`` and
``password``) and a Bearer token (``token``, for readers or proxies sending a fixed
``Authorization`` header); either one is accepted when both are configured. Secrets are
compared in constant time (over their SHA-256, so not even the length leaks) and never appear
in an error report: a refusal reports why (no credentials, wrong Basic, wrong token, an
unsupported scheme) and the request line, not the header.

TLS: with ``cert_file`` (and ``key_file``) every connection is TLS; the handshake runs in the
connection's own thread (a slow or broken client holds only itself up) and a failed one is
reported to `on_error`. Each connection has a ``timeout_s`` for every read and write, so a
client that stops halfway (a truncated body, an idle socket) frees its thread.

Handler threads run concurrently, but `on_read`/`on_error` are called under one lock, one call
at a time, like every other reader. Without credentials configured the receiver accepts anyone
who can reach it: bind it to loopback or a dedicated reader network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from floorsync.devices.base import DeviceError, DeviceGone
from floorsync.devices.rfid import tls
from floorsync.devices.rfid.base import OnError, OnRead, OnState, Parser, report_errors, supervise

REALM = "floorsync-rfid"
MAX_LINGER = 1024 * 1024  # bytes of an unwanted body discarded so the client reads our answer
LINGER_S = 2.0
MAX_TRAILERS = 64


class _Refused(Exception):
    """A request answered with an error before or while its body was read."""

    def __init__(self, status: int, reason: str, *, unread: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.unread = unread  # body bytes left on the socket (discarded before closing)


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


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
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.parser = parser
        self.name = name
        self.on_error = on_error
        self.max_body = max_body
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.timeout_s = timeout_s
        if (username is None) != (password is None):
            raise DeviceError(f"{name}: Basic authentication needs both username and password")
        if username is not None and ":" in username:
            raise DeviceError(f"{name}: a Basic username cannot hold ':'")
        if token is not None and (not token or not token.isprintable() or " " in token):
            raise DeviceError(f"{name}: the bearer token must be printable, without spaces")
        # Only digests are kept: the secrets themselves are not needed after this.
        self._basic = (None if username is None else
                       _digest(f"{username}:{password}".encode()))
        self._token = None if token is None else _digest(token.encode())
        if key_file is not None and cert_file is None:
            raise DeviceError(f"{name}: key_file given without cert_file")
        self.tls_context: ssl.SSLContext | None = (
            tls.server_context(cert_file, key_file, what=f"{name}: receiver TLS")
            if cert_file is not None else None
        )
        self.listening = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}  # handler thread -> when its request came

    @property
    def scheme(self) -> str:
        return "https" if self.tls_context is not None else "http"

    @property
    def caught_up_at(self) -> float:
        """Monotonic time by which every request received was handed over (see MqttTagReader)."""
        times = list(self._inflight.values())
        return min(times) if times else time.monotonic()

    acknowledges = True  # run() takes a commit: answers 2xx only for what is durable

    def _unauthorized(self, header: str | None) -> str | None:
        """Why the ``Authorization`` header is refused, or None when it is accepted."""
        if self._basic is None and self._token is None:
            return None
        if header is None:
            return "no credentials"
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "basic" and self._basic is not None:
            try:
                given = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                return "malformed Basic credentials"
            ok = hmac.compare_digest(_digest(given), self._basic)
            return None if ok else "wrong Basic username or password"
        if scheme == "bearer" and self._token is not None:
            given = value.encode("latin-1", "replace")  # as http.server decoded the header
            return None if hmac.compare_digest(_digest(given), self._token) else "wrong token"
        shown = scheme[:20] if scheme.isascii() and scheme.isprintable() else "?"
        return f"unsupported authentication scheme {shown!r}"

    def _challenges(self) -> list[str]:
        out = []
        if self._basic is not None:
            out.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self._token is not None:
            out.append(f'Bearer realm="{REALM}"')
        return out

    def _handler(self, on_read: OnRead,
                 commit: Callable[[], object] | None) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = receiver.timeout_s  # every read and write (StreamRequestHandler.setup)
            _linger = 0

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the access log would be one line per reader push

            def handle_one_request(self) -> None:
                # A client that resets its connection before sending a new request (a reader
                # closing a kept-alive connection with our last answer still unread) has sent
                # nothing to lose or refuse: that is a close, not an error to report.
                self.raw_requestline = b""
                try:
                    super().handle_one_request()
                except ConnectionResetError:
                    if self.raw_requestline:
                        raise
                    self.close_connection = True

            def send_error(self, code: int, message: str | None = None,
                           explain: str | None = None) -> None:
                # http.server's own refusals (a garbage request line, bad headers): reported
                if code != 405:
                    receiver._error(f"bad request: {code} {message or ''}".strip()[:200],
                                    getattr(self, "raw_requestline", b""))
                super().send_error(code, message, explain)

            def _answer(self, status: int, reason: str = "", retry_after: int | None = None,
                        headers: tuple[tuple[str, str], ...] = ()) -> None:
                body = (reason + "\n").encode("utf-8") if reason else b""
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                for key, value in headers:
                    self.send_header(key, value)
                if body:
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _refuse(self, refused: _Refused, sample: bytes | None = None) -> None:
                """Report, answer and close; discard what the client still sends (bounded)."""
                self.close_connection = True
                receiver._error(refused.reason, self.requestline.encode("latin-1", "replace")
                                if sample is None else sample)
                headers: tuple[tuple[str, str], ...] = ()
                if refused.status == 401:
                    headers = tuple(("WWW-Authenticate", c) for c in receiver._challenges())
                self._linger = refused.unread
                try:
                    self._answer(refused.status, refused.reason, headers=headers)
                except OSError:  # the client is gone (it truncated and closed): reported above
                    self._linger = 0

            def _declared(self) -> tuple[bool, int]:
                """Checks before any body byte is read: (chunked, declared length)."""
                why = receiver._unauthorized(self.headers.get("Authorization"))
                expecting = self.headers.get("Expect", "").lower() == "100-continue"
                length_header = self.headers.get("Content-Length")
                coding = self.headers.get("Transfer-Encoding")
                unread = 0
                if length_header is not None and length_header.strip().isdigit():
                    unread = int(length_header)
                unread = 0 if expecting else min(unread, MAX_LINGER)
                if why is not None:
                    raise _Refused(401, f"unauthorized: {why}", unread=unread)
                if coding is not None:
                    if length_header is not None:
                        raise _Refused(400, "both Content-Length and Transfer-Encoding")
                    if coding.strip().lower() != "chunked":
                        raise _Refused(400, f"Transfer-Encoding {coding[:40]!r} not supported "
                                            "(chunked only)")
                    return True, 0
                if length_header is None:
                    raise _Refused(411, "Content-Length required")
                try:
                    length = int(length_header)
                    if length < 0:
                        raise ValueError
                except ValueError:
                    raise _Refused(400, f"bad Content-Length: {length_header[:40]!r}") from None
                if length > receiver.max_body:
                    raise _Refused(413, f"body of {length} bytes over the {receiver.max_body}"
                                        "-byte cap", unread=unread)
                return False, length

            def handle_expect_100(self) -> bool:
                # A client that asked first gets its refusal before sending the body.
                if self.command == "POST":
                    try:
                        self._declared()
                    except _Refused as refused:
                        self._refuse(refused)
                        return False
                return super().handle_expect_100()

            def _read_exact(self, n: int, what: str) -> bytes:
                try:
                    data = self.rfile.read(n)
                except TimeoutError:
                    raise _Refused(400, f"truncated {what}: nothing for {receiver.timeout_s:g} s"
                                   ) from None
                if len(data) < n:
                    raise _Refused(400, f"truncated {what}: {len(data)} of {n} bytes")
                return data

            def _chunked(self) -> bytes:
                parts: list[bytes] = []
                total = 0
                while True:
                    try:
                        line = self.rfile.readline(1026)
                    except TimeoutError:
                        line = b""
                    if not line.endswith(b"\n"):
                        raise _Refused(400, "truncated or malformed chunk size line")
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                        if size < 0 or not size_text.isalnum():
                            raise ValueError
                    except ValueError:
                        raise _Refused(400, f"bad chunk size {size_text[:20]!r}") from None
                    if size == 0:
                        break
                    if total + size > receiver.max_body:
                        raise _Refused(413, f"chunked body over the {receiver.max_body}-byte "
                                            "cap", unread=MAX_LINGER)
                    parts.append(self._read_exact(size, "chunk"))
                    total += size
                    if self._read_exact(2, "chunk end") != b"\r\n":
                        raise _Refused(400, "chunk not followed by CRLF")
                for _ in range(MAX_TRAILERS):  # trailer fields, ignored, up to the blank line
                    try:
                        trailer = self.rfile.readline(8194)
                    except TimeoutError:
                        trailer = b""
                    if trailer in (b"\r\n", b"\n"):
                        return b"".join(parts)
                    if not trailer.endswith(b"\n"):
                        break
                raise _Refused(400, "truncated or malformed chunked trailer")

            def do_POST(self) -> None:
                me = threading.get_ident()
                receiver._inflight[me] = time.monotonic()
                try:
                    try:
                        chunked, length = self._declared()
                        body = self._chunked() if chunked else self._read_exact(length, "body")
                    except _Refused as refused:
                        self._refuse(refused)
                        return
                    self._post(body)
                finally:
                    receiver._inflight.pop(me, None)

            def _post(self, body: bytes) -> None:
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

            def finish(self) -> None:
                super().finish()
                if self._linger:
                    _linger(self.connection, self._linger)

        return Handler

    def _error(self, reason: str, raw: bytes) -> None:
        with self._lock:
            if self.on_error is not None:
                self.on_error(reason, raw[:512])

    def _server(self, on_read: OnRead,
                commit: Callable[[], object] | None) -> ThreadingHTTPServer:
        receiver = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                if receiver.tls_context is None:
                    super().finish_request(request, client_address)
                    return
                request.settimeout(receiver.timeout_s)
                try:  # here, in the connection's thread, not in the accepting one
                    secure = receiver.tls_context.wrap_socket(request, server_side=True)
                except (OSError, ValueError) as exc:
                    receiver._error(f"TLS handshake from {client_address[0]} failed: "
                                    f"{tls.describe(exc)}", b"")
                    return
                try:
                    super().finish_request(secure, client_address)
                finally:
                    self.shutdown_request(secure)

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Reported like bad input, not printed as a traceback; the server goes on.
                exc = sys.exc_info()[1]
                if isinstance(exc, TimeoutError | ConnectionError | ssl.SSLError):
                    reason = f"connection from {client_address[0]} failed: {exc}"
                else:
                    reason = f"request from {client_address[0]} failed: {type(exc).__name__}"
                receiver._error(reason[:300], b"")

        return Server((self.host, self.port), self._handler(on_read, commit))

    def run(self, on_read: OnRead, stop: threading.Event, on_state: OnState | None = None,
            commit: Callable[[], object] | None = None) -> None:
        """Serve until `stop`; if the port cannot be bound, retry with backoff (offline).

        ``commit``: makes the reads handed over so far durable; a body is answered 2xx only
        after it returned."""

        def session(mark_online: Callable[[], None]) -> None:
            try:
                server = self._server(on_read, commit)
            except OSError as exc:
                raise DeviceGone(
                    f"{self.name}: cannot listen on {self.host}:{self.port}: {exc}"
                ) from exc
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


def _linger(connection: socket.socket, limit: int) -> None:
    """After answering without reading a body: stop sending, then discard up to ``limit`` bytes
    (or ``LINGER_S``) so closing does not reset the connection before the client read the
    answer (a close with unread data sends RST, and the client may lose our response)."""
    try:
        connection.shutdown(socket.SHUT_WR)  # on TLS this also drops the TLS layer: fine here
        connection.settimeout(0.2)
        deadline = time.monotonic() + LINGER_S
        left = limit
        while left > 0 and time.monotonic() < deadline:
            try:
                data = connection.recv(min(65536, left))
            except TimeoutError:
                continue
            if not data:
                break
            left -= len(data)
    except OSError:
        pass
