"""A client that leaves a server-sent event stream frees its batch rows, as on gRPC."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

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
