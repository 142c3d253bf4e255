"""HttpTagReceiver's authentication, body limits and HTTPS, over real sockets.

Requests are written by hand on raw sockets where a library would hide what is tested (a
declared length that is never sent, chunks that pass the cap, a body cut short); http.client
and ssl do the rest. Every test ends with the receiver still answering a good request.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import queue
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.devices.base import DeviceError
from floorsync.devices.rfid.http_receiver import HttpTagReceiver
from floorsync.devices.rfid.impinj import parse_impinj
from tests.devices.rfid import running
from tests.security.pki import Issued, TestCA

EPC = "3074257BF7194E4000001A85"
USER, PASSWORD, TOKEN = "impinj-door-1", "s3cret-Pa55word", "tok-9f8e7d6c5b4a39281706"
SECRETS = (PASSWORD, TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def body(epc: str = EPC, antenna: int = 1) -> bytes:
    return json.dumps({
        "timestamp": "2026-01-02T03:04:05Z", "hostname": "impinj-14-1f-23",
        "eventType": "tagInventory",
        "tagInventoryEvent": {"epcHex": epc, "antennaPort": antenna, "peakRssiCdbm": -4500},
    }).encode()


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Running(running.Running[HttpTagReceiver]):
    def __init__(self, receiver: HttpTagReceiver) -> None:
        super().__init__(receiver)
        assert self.states.get(timeout=10) is True

    @property
    def port(self) -> int:
        return self.reader.port

    def post(self, payload: bytes, headers: dict[str, str] | None = None,
             context: ssl.SSLContext | None = None) -> tuple[int, str, http.client.HTTPMessage]:
        if context is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=10)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                               context=context)
        try:
            conn.request("POST", "/rfid", body=payload,
                         headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read().decode(), response.headers
        finally:
            conn.close()

    def raw(self, request: bytes, *, then: bytes = b"") -> bytes:
        """Send ``request`` (and ``then``), half-close nothing, read the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            if then:
                sock.sendall(then)
            return read_response(sock)

    def drain_errors(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.errors.get_nowait()[0])
            except queue.Empty:
                return out


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response: its head, then Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def guarded() -> Iterator[Running]:
    """A receiver wanting Basic or Bearer credentials, with a 100 kB body limit."""
    running = Running(HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="door-1",
                                      username=USER, password=PASSWORD, token=TOKEN,
                                      max_body=100_000, timeout_s=1.0))
    yield running
    running.close()


def assert_still_serving(running: Running, headers: dict[str, str] | None = None,
                         context: ssl.SSLContext | None = None) -> None:
    status, _, _ = running.post(body(antenna=9), headers or {"Authorization": basic()},
                                context=context)
    assert status == 204
    assert running.reads.get(timeout=5).antenna == 9


def test_basic_and_bearer_accepted_and_a_replay_is_a_duplicate_read(guarded: Running) -> None:
    assert guarded.post(body(antenna=1), {"Authorization": basic()})[0] == 204
    assert guarded.post(body(antenna=2), {"Authorization": f"Bearer {TOKEN}"})[0] == 204
    assert guarded.post(body(antenna=2), {"Authorization": f"bearer  {TOKEN}"})[0] == 204
    assert [guarded.reads.get(timeout=5).antenna for _ in range(3)] == [1, 2, 2]
    assert guarded.drain_errors() == []


@pytest.mark.parametrize(("header", "why"), [
    (None, "no credentials"),
    (basic(password="wrong-password"), "wrong Basic username or password"),
    (basic(user="zebra-fx", password=PASSWORD), "wrong Basic username or password"),
    ("Basic !!!not-base64!!!", "malformed Basic credentials"),
    (f"Bearer {TOKEN}x", "wrong token"),
    ("Bearer ", "wrong token"),
    (f"Token {TOKEN}", "unsupported authentication scheme 'token'"),
    ('Digest username="impinj"', "unsupported authentication scheme 'digest'"),
])
def test_wrong_or_missing_credentials_get_401_with_challenges(
    guarded: Running, header: str | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, text, headers = guarded.post(body(), {"Authorization": header} if header else {})
    assert status == 401 and why in text
    assert headers.get_all("WWW-Authenticate") == [
        'Basic realm="floorsync-rfid", charset="UTF-8"', 'Bearer realm="floorsync-rfid"']
    assert guarded.reads.empty()
    reason, raw = guarded.errors.get(timeout=5)
    assert reason == f"unauthorized: {why}" and raw.startswith(b"POST /rfid HTTP/1.1")
    reported = reason + raw.decode("latin-1") + caplog.text
    assert not any(secret in reported for secret in SECRETS)
    assert_still_serving(guarded)


def test_credentials_are_checked_before_the_body_is_sent(guarded: Running) -> None:
    """Expect: 100-continue: a refused reader never sends its body (401 instead of 100)."""
    head = (b"POST /rfid HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n"
            b"Expect: 100-continue\r\n\r\n")
    answer = guarded.raw(head)
    assert status_of(answer) == 401 and b"no credentials" in answer
    auth = f"Authorization: {basic()}\r\n".encode()
    good = body()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(b"POST /rfid HTTP/1.1\r\nHost: x\r\n" + auth
                     + f"Content-Length: {len(good)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100")
        sock.sendall(good)
        assert status_of(read_response(sock)) == 204
    assert guarded.reads.get(timeout=5).epc == EPC


def test_declared_oversized_body_is_413_unread(guarded: Running) -> None:
    """A declared 2 GB body: refused from its headers, the few bytes sent are discarded."""
    head = (b"POST /rfid HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n"
            + f"Authorization: {basic()}\r\n\r\n".encode())
    answer = guarded.raw(head, then=b"[" * 4096)
    assert status_of(answer) == 413
    assert b"body of 2000000000 bytes over the 100000-byte cap" in answer
    assert b"Connection: close" in answer
    assert guarded.drain_errors() == ["body of 2000000000 bytes over the 100000-byte cap"]
    assert_still_serving(guarded)


def test_chunked_bodies_read_and_capped(guarded: Running) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    head = b"POST /rfid HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + auth + b"\r\n"
    good = body(antenna=4)
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                      for part in (good[:10], good[10:]))
    answer = guarded.raw(head + chunks + b"0\r\nX-Trailer: t\r\n\r\n")
    assert status_of(answer) == 204
    assert guarded.reads.get(timeout=5).antenna == 4
    # chunks adding up past 100 kB: 413 once the cap is passed, the rest never read
    big = b"e000\r\n" + b" " * 0xE000 + b"\r\n"
    answer = guarded.raw(head + big, then=big)
    assert status_of(answer) == 413 and b"chunked body over the 100000-byte cap" in answer
    # one chunk declaring more than the cap: refused from its size line
    answer = guarded.raw(head + b"FFFFFFFFFFFF\r\n")
    assert status_of(answer) == 413
    assert guarded.drain_errors() == ["chunked body over the 100000-byte cap"] * 2
    assert_still_serving(guarded)


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size b'zz'"),
    (b"Transfer-Encoding: chunked\r\n\r\n-5\r\n", "bad chunk size b'-5'"),
    (b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcdeXY", "chunk not followed by CRLF"),
    (b"Transfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding 'gzip' not supported (chunked only)"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
     "both Content-Length and Transfer-Encoding"),
    (b"Content-Length: -4\r\n\r\n", "bad Content-Length: '-4'"),
    (b"Content-Length: 1e3\r\n\r\n", "bad Content-Length: '1e3'"),
    (b"\r\n", "Content-Length required"),
])
def test_broken_framing_gets_its_reason(guarded: Running, request_bytes: bytes,
                                        reason: str) -> None:
    head = b"POST /rfid HTTP/1.1\r\nHost: x\r\n" + f"Authorization: {basic()}\r\n".encode()
    answer = guarded.raw(head + request_bytes)
    assert status_of(answer) in (400, 411) and reason.encode() in answer
    assert guarded.drain_errors() == [reason]
    assert_still_serving(guarded)


def test_truncated_bodies_are_reported_and_free_their_thread(guarded: Running) -> None:
    head = b"POST /rfid HTTP/1.1\r\nHost: x\r\n" + f"Authorization: {basic()}\r\n".encode()
    # a body that stops coming: the connection's timeout (1 s here) ends it with a reason
    answer = guarded.raw(head + b"Content-Length: 500\r\n\r\n" + body()[:40])
    assert status_of(answer) == 400 and b"truncated body: nothing for 1 s" in answer
    # a chunked body whose sender closes halfway
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n40\r\n" + b"{" * 10)
        sock.shutdown(socket.SHUT_WR)
        assert status_of(read_response(sock)) == 400
    assert guarded.drain_errors() == ["truncated body: nothing for 1 s",
                                      "truncated chunk: 10 of 64 bytes"]
    assert guarded.reads.empty()
    assert_still_serving(guarded)


def test_garbage_instead_of_http_keeps_the_receiver(guarded: Running) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4)
        sock.shutdown(socket.SHUT_WR)
        assert b"400" in read_response(sock)  # no HTTP version understood: no status line
    reason, raw = guarded.errors.get(timeout=5)
    assert reason.startswith("bad request: 400 Bad request") and raw.startswith(b"\x16\x03")
    assert_still_serving(guarded)


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a reader does that drops a connection abruptly."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_reset_between_requests_is_a_close_and_one_mid_request_is_reported(
        guarded: Running) -> None:
    head = b"POST /rfid HTTP/1.1\r\nHost: x\r\n" + f"Authorization: {basic()}\r\n".encode()
    # the answer (with its text) is left unread and the connection reset: nothing was lost
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
    sock.sendall(head + b"Content-Length: 6\r\n\r\n<xml/>")
    assert sock.recv(12).startswith(b"HTTP/1.1 400")
    time.sleep(0.1)  # the rest of the answer is in our buffer: closing now sends RST
    reset(sock)
    assert guarded.errors.get(timeout=5)[0].startswith("invalid JSON")  # the 400's reason
    with pytest.raises(queue.Empty):
        guarded.errors.get(timeout=1)  # and nothing about the reset
    # a reset halfway through a request's headers is reported
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
    sock.sendall(head[:40])
    time.sleep(0.1)
    reset(sock)
    reason, _ = guarded.errors.get(timeout=5)
    assert "Connection reset by peer" in reason
    assert_still_serving(guarded)


def test_half_configured_credentials_are_refused() -> None:
    with pytest.raises(DeviceError, match="both username and password"):
        HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="d", username="u")
    with pytest.raises(DeviceError, match="printable, without spaces"):
        HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="d", token="two words")
    with pytest.raises(DeviceError, match="no such file"):
        HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="d", cert_file="/nonexistent.crt")


# --- HTTPS ------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCA, Issued]:
    ca = TestCA.create(tmp_path / "pki")
    return ca, ca.server("edge-host", hosts=("localhost", "127.0.0.1"))


def test_https_with_a_verifying_client(pki: tuple[TestCA, Issued], tmp_path: Path) -> None:
    ca, cert = pki
    running = Running(HttpTagReceiver("127.0.0.1", 0, parse_impinj, name="door-1",
                                      username=USER, password=PASSWORD, cert_file=str(cert.cert),
                                      key_file=str(cert.key), timeout_s=2.0))
    try:
        assert running.reader.scheme == "https"
        trusting = ssl.create_default_context(cafile=str(ca.cert))
        status, _, _ = running.post(body(antenna=3), {"Authorization": basic()}, trusting)
        assert status == 204 and running.reads.get(timeout=5).antenna == 3
        assert running.post(body(), {}, trusting)[0] == 401  # TLS does not replace the login

        # a client trusting another CA refuses the receiver's certificate
        other = TestCA.create(tmp_path / "other", name="Other CA")
        with pytest.raises(ssl.SSLCertVerificationError):
            running.post(body(), {"Authorization": basic()},
                         ssl.create_default_context(cafile=str(other.cert)))
        # plain HTTP to the HTTPS port: no answer in clear, the failure reported
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"POST /rfid HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            try:
                answer = read_response(sock)
            except ConnectionResetError:  # the handshake's end: the connection is reset
                answer = b""
            assert b"HTTP/1.1 2" not in answer
        errors = running.drain_errors()
        while len(errors) < 3:  # the handshakes' failures, in whatever order they ended
            errors.append(running.errors.get(timeout=5)[0])
        assert errors[0] == "unauthorized: no credentials"
        assert sorted(e.split(" failed: ")[0] for e in errors[1:]) == [
            "TLS handshake from 127.0.0.1"] * 2
        assert any("HTTP_REQUEST" in e or "http request" in e.lower() for e in errors[1:])
        assert_still_serving(running, context=trusting)
    finally:
        running.close()
