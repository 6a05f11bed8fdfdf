"""Connections of the HTTP port: a reused (keep-alive) connection answers at once. Its responses
used to wait for the client's delayed ACK, 40 ms per request, because the accepted sockets
lacked TCP_NODELAY (asyncio sets it only on sockets made with IPPROTO_TCP)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

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
