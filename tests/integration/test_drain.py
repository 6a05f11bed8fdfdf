"""Graceful shutdown: health NOT_SERVING, new requests UNAVAILABLE, running ones finish, exit 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.servicer import SERVICE_NAME
from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import (
    LONG_REQUEST_ROWS,
    LONG_TOKENS,
    SHORT_REQUEST,
    TEXT,
    wait_until,
)
from tests.integration.serve_process import ServeProcess

DRAIN_TOKENS = 600  # with beams: a couple of seconds, finished well within the drain
DRAIN_REQUEST = {"max_new_tokens": DRAIN_TOKENS, "min_new_tokens": DRAIN_TOKENS, "num_beams": 4}


def health_statuses(channel: grpc.Channel) -> list[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    request = lambda name: health_pb2.HealthCheckRequest(service=name)  # noqa: E731
    return [stub.Check(request(name), timeout=5).status for name in ("", SERVICE_NAME)]


def test_draining_refuses_new_requests_and_lets_running_ones_finish(models_dir: Path):
    with (
        serving(models_dir, max_new_tokens_cap=LONG_TOKENS) as server,
        AttnserveClient(server.target) as client,
    ):
        running = client.summarize_stream(TEXT, **DRAIN_REQUEST)
        wait_until(lambda: server.engine.running_rows() == LONG_REQUEST_ROWS, what="it to run")

        drained = server.start_drain()
        not_serving = [health_pb2.HealthCheckResponse.NOT_SERVING] * 2
        wait_until(lambda: health_statuses(client.channel) == not_serving, what="NOT_SERVING")
        with pytest.raises(grpc.RpcError) as refused:
            client.summarize(TEXT, **SHORT_REQUEST)
        still_running = not running.done()
        final = list(running)[-1]
        drained.result(timeout=30)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in refused.value.details()
    assert still_running
    assert final.finish_reason and final.output_tokens == DRAIN_TOKENS  # ran to its full length


def first_refusal(client: AttnserveClient, timeout: float = 10.0) -> grpc.RpcError:
    """Send requests until one fails (a signal takes a moment to be handled); that error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.summarize(TEXT, **SHORT_REQUEST)
        except grpc.RpcError as error:
            return error
    raise AssertionError(f"requests were still served {timeout} s after SIGTERM")


def test_sigterm_drains_and_exits_zero(serve_process: ServeProcess):
    process = serve_process.process
    with AttnserveClient(serve_process.target) as client:
        stream = client.summarize_stream(
            TEXT, max_new_tokens=LONG_TOKENS, min_new_tokens=LONG_TOKENS
        )
        first = next(stream)

        process.send_signal(signal.SIGTERM)
        refused = first_refusal(client)
        rest = list(stream)

    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(chunk.text_delta for chunk in [first, *rest])
    assert rest[-1].finish_reason and rest[-1].output_tokens == LONG_TOKENS
    assert process.wait(timeout=60) == 0
