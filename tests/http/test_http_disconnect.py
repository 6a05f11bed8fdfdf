"""A client that leaves a server-sent event stream frees its batch rows, as on gRPC; a client
that leaves, mid-stream or mid-upload, is counted as CANCELLED, not as a server fault."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest

from service.api.rest import handlers
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.fixtures.served_models import tiny_models_once
from tests.integration.models import LONG_REQUEST, LONG_TOKENS, TEXT, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    models = tiny_models_once(tmp_path_factory)
    overrides = {"http_port": 0}
    with serving(models, server_overrides=overrides, max_new_tokens_cap=LONG_TOKENS) as running:
        yield running


def test_leaving_a_stream_cancels_its_request(server: InProcessServer):
    assert server.engine is not None and server.server.rest is not None
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest.port, timeout=60)
    body = {"text": TEXT, "params": {**LONG_REQUEST, "num_beams": 1}}
    connection.request("POST", "/v1/summarize/stream", body=json.dumps(body))
    response = connection.getresponse()
    assert response.status == 200
    wait_until(lambda: server.engine.running_rows() > 0, what="the request to run")
    connection.close()  # long before its LONG_TOKENS tokens
    wait_until(lambda: server.engine.running_rows() == 0, timeout=10, what="its rows to be freed")
    generated = server.metrics.registry.get_sample_value(
        "attnserve_generated_tokens_total", {"model": "tiny-summarizer", "version": "1"}
    )
    assert not generated  # counted when a request finishes: this one was cancelled
    wait_until(
        lambda: _count(server, "POST /v1/summarize/stream", "CANCELLED") == 1,
        what="the stream to be counted as cancelled",
    )
    assert not _count(server, "POST /v1/summarize/stream", "OK")


@pytest.mark.parametrize(
    "route", ["/v1/summarize", "/v1/summarize/stream", "/v2/models/tiny-summarizer/generate"]
)
def test_leaving_before_the_first_byte_of_the_answer_cancels_its_request(
    server: InProcessServer, route: str
):
    """A unary answer, or a beam-search stream's one event, comes only at the end: until then
    only the connection can tell that the client left. Its request used to run to its end."""
    assert server.engine is not None and server.server.rest is not None
    before = _count(server, f"POST {_route_label(route)}", "CANCELLED")
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest.port, timeout=60)
    if route.startswith("/v2"):
        body = {"text": TEXT, "parameters": LONG_REQUEST}
    else:
        body = {"text": TEXT, "params": LONG_REQUEST}  # beams: no event before the end
    connection.request("POST", route, body=json.dumps(body))
    wait_until(lambda: server.engine.running_rows() > 0, what="the request to run")
    connection.close()
    wait_until(lambda: server.engine.running_rows() == 0, timeout=10, what="its rows to be freed")
    wait_until(
        lambda: _count(server, f"POST {_route_label(route)}", "CANCELLED") == before + 1,
        what="the request to be counted as cancelled",
    )


def _route_label(route: str) -> str:
    return route.replace("tiny-summarizer", "{name}")


def test_a_client_leaving_while_it_sends_its_body_is_cancelled_not_a_fault(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
):
    assert server.server.rest is not None
    before = _count(server, "POST /v1/summarize", "CANCELLED")
    with socket.create_connection(("127.0.0.1", server.server.rest.port), timeout=10) as client:
        head = b"POST /v1/summarize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        client.sendall(head + b'{"text": "w1 ')  # 13 of the 1000 bytes announced
    wait_until(
        lambda: _count(server, "POST /v1/summarize", "CANCELLED") == before + 1,
        what="the request to be counted as cancelled",
    )
    assert not _count(server, "POST /v1/summarize", "INTERNAL")
    assert "server fault" not in caplog.text


def test_a_body_that_stops_coming_is_408_after_a_pause(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
):
    """A client that announces more bytes than it sends does not hold its connection for good."""
    monkeypatch.setattr(handlers, "BODY_IDLE_S", 0.5)
    assert server.server.rest is not None
    with socket.create_connection(("127.0.0.1", server.server.rest.port), timeout=10) as client:
        head = b"POST /v1/summarize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        client.sendall(head + b'{"text": "w1 ')
        answer = b""  # the socket stays open: the server must answer on its own
        while b" s)" not in answer and (chunk := client.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"the request body stopped coming (13 bytes came;" in answer
    assert _count(server, "POST /v1/summarize", "DEADLINE_EXCEEDED") == 1


def _count(server: InProcessServer, method: str, code: str) -> float:
    """Requests of `method` counted under `code`, whatever their model."""
    return sum(
        sample.value
        for family in server.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "attnserve_requests_total"
        and sample.labels["method"] == method
        and sample.labels["code"] == code
    )
