"""`attnserve serve --http-port` as an operator runs it: on SIGTERM the HTTP port drains like
the gRPC one (running streams finish, new requests get 503) and the process exits 0."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time

import pytest

from tests.fixtures.served_models import tiny_models_once
from tests.integration.models import LONG_TOKENS, TEXT
from tests.integration.serve_process import serve_in_subprocess

TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(port: int, path: str, body: dict) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    connection.request("POST", path, body=json.dumps(body))
    return connection.getresponse()


def _first_refusal(port: int) -> http.client.HTTPResponse:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        answer = _post(port, "/v1/summarize", {"text": TEXT, "params": {"max_new_tokens": 2}})
        if answer.status != 200:
            return answer
        answer.read()
    raise AssertionError("HTTP requests were still served after SIGTERM")


def test_sigterm_drains_http_streams_and_exits_zero(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    models = tiny_models_once(tmp_path_factory)
    cap = ("--max-new-tokens-cap", str(LONG_TOKENS))
    with serve_in_subprocess(models, "--http-port", str(port), *cap) as served:
        long = {"max_new_tokens": LONG_TOKENS, "min_new_tokens": LONG_TOKENS}
        stream = _post(port, "/v1/summarize/stream", {"text": TEXT, "params": long})
        assert stream.status == 200 and stream.readline().startswith(b"data: ")

        served.process.send_signal(signal.SIGTERM)
        refused = _first_refusal(port)
        events = [line for line in stream.read().splitlines() if line.startswith(b"data: ")]

        assert refused.status == 503 and "draining" in json.loads(refused.read())["error"]
        final = json.loads(events[-1][len(b"data: ") :])
        assert final["finish_reason"] and final["output_tokens"] == LONG_TOKENS
        assert served.process.wait(timeout=TIMEOUT_S) == 0
