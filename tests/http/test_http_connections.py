"""Connections of the HTTP port: a reused (keep-alive) connection answers at once. Its responses
used to wait for the client's delayed ACK, 40 ms per request, because the accepted sockets
lacked TCP_NODELAY (asyncio sets it only on sockets made with IPPROTO_TCP)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from service.api.rest import connection
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.fixtures.served_models import tiny_models_once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    models = tiny_models_once(tmp_path_factory)
    with serving(models, server_overrides={"http_port": 0}) as running:
        yield running


def test_accepted_connections_send_without_waiting_for_acks(server: InProcessServer):
    rest = server.server.rest
    assert rest is not None
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=30)
    try:
        for _ in range(3):  # one connection, reused
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        client_port = connection.sock.getsockname()[1]
        sockets = [
            protocol.transport.get_extra_info("socket")
            for protocol in rest._uvicorn.server_state.connections
        ]
        ours = [s for s in sockets if s.getpeername()[1] == client_port]
        assert len(ours) == 1
        assert ours[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        connection.close()


def _answer_within(client: socket.socket, seconds: float) -> bytes:
    """All the server sends until it closes the connection (b"" if it closes at once); fails if
    it is still open after `seconds`."""
    client.settimeout(seconds)
    answer = b""
    while chunk := client.recv(4096):  # a socket.timeout here: the server kept it open
        answer += chunk
    return answer


def _seconds_until_cut_off(client: socket.socket, piece: bytes) -> float:
    """Sends `piece` every 0.2 s until the server closes the connection (10 s at most)."""
    started = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while time.monotonic() - started < 10:
            client.sendall(piece)
            time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /v1/summarize HTTP/1.1\r\n", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "request-line", "part-of-the-headers"],
)
def test_a_request_head_that_does_not_come_closes_the_connection(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch, sent: bytes
):
    """Slowloris: a connection that sends nothing, or not all of its head, was held for good.
    Part of a request gets a 408 first; a silent connection is closed."""
    monkeypatch.setattr(connection, "HEAD_S", 0.5)
    rest = server.server.rest
    assert rest is not None
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as client:
        client.sendall(sent)
        answer = _answer_within(client, 10)
    if sent:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"error": "the request line and headers did not all arrive within 0.5 s"' in answer
    else:
        assert answer == b""


def test_a_head_trickled_a_line_at_a_time_is_cut_at_the_deadline(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
):
    """Each line resets no timer: the whole head must come within the deadline."""
    monkeypatch.setattr(connection, "HEAD_S", 1.0)
    rest = server.server.rest
    assert rest is not None
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as client:
        client.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        assert _seconds_until_cut_off(client, b"X-Slow: 1\r\n") < 5


def test_a_kept_alive_connection_waits_for_the_next_head_then_closes(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
):
    """The deadline starts again after each answer; a request whose head came in time is
    answered however long the deadline is."""
    monkeypatch.setattr(connection, "HEAD_S", 0.5)
    rest = server.server.rest
    assert rest is not None
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as client:
        client.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        client.settimeout(10)
        first = b""
        while not first.endswith(b'{"live":true}'):
            first += client.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 "), first
        client.sendall(b"GET /v2/health/live HTTP/1.1\r\n")  # the next head, never finished
        answer = _answer_within(client, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_the_unread_body_of_an_answered_request_must_come_within_the_deadline(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
):
    """An unknown model is 404 before its body is read: the rest of that body is read and thrown
    away, and a client trickling it held the connection for good."""
    monkeypatch.setattr(connection, "HEAD_S", 1.0)
    rest = server.server.rest
    assert rest is not None
    head = b"POST /v2/models/no-such-model/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
    with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as client:
        client.sendall(head + b"\r\n{")
        client.settimeout(10)
        answer = b""
        while b"is not found" not in answer:
            answer += client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 404 "), answer
        assert _seconds_until_cut_off(client, b" ") < 5
