"""Clients leaving server-sent event streams while other streams run: the server stops writing
to them without asyncio logging "socket.send() raised exception" (docs/http.md: nothing is
logged for a client that leaves)."""

from __future__ import annotations

import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from export.demo.tasks import make_match_report
from tests.http.conftest import HttpServer

TEXT = make_match_report(np.random.default_rng(510))[0]
FULL_CLIENTS, FULL_STREAMS_EACH = 12, 6
LEAVING_CLIENTS, LEAVES_EACH, EVENTS_BEFORE_LEAVING = 4, 30, 3
TIMEOUT_S = 60.0


def _open_stream(http_server: HttpServer) -> socket.socket:
    host, port = http_server.host_port.split(":")
    connection = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
    body = json.dumps({"text": TEXT, "params": {"max_new_tokens": 60, "min_new_tokens": 60}})
    head = (
        "POST /v1/summarize/stream HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body.encode())
    return connection


def _read_whole_streams(http_server: HttpServer) -> None:
    for _ in range(FULL_STREAMS_EACH):
        with _open_stream(http_server) as connection:
            seen = b""
            while b"finish_reason" not in seen:
                chunk = connection.recv(65536)
                assert chunk, "the stream ended before its last event"
                seen += chunk


def _leave_streams(http_server: HttpServer) -> None:
    for _ in range(LEAVES_EACH):
        with _open_stream(http_server) as connection:
            seen = b""
            while seen.count(b"data:") < EVENTS_BEFORE_LEAVING:
                seen += connection.recv(4096)


def test_clients_leaving_streams_are_not_written_to_until_asyncio_complains(
    http_server: HttpServer, caplog: pytest.LogCaptureFixture
):
    jobs = [_read_whole_streams] * FULL_CLIENTS + [_leave_streams] * LEAVING_CLIENTS
    with caplog.at_level(logging.WARNING, logger="asyncio"), ThreadPoolExecutor(len(jobs)) as pool:
        for done in [pool.submit(job, http_server) for job in jobs]:
            done.result(timeout=TIMEOUT_S * FULL_STREAMS_EACH)
    complaints = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
    assert complaints == []
