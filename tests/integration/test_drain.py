"""Graceful shutdown: the gRPC port sends its clients away (GOAWAY: their next calls go to
another server, here none, so UNAVAILABLE), the calls it has run to their end, exit 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.server import STOP_GRACE_SECONDS
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


# A call crossing the GOAWAY on the wire is cancelled by gRPC's server shutdown; after it,
# the client's next calls find no server.
SENT_AWAY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_draining_sends_new_calls_away_and_lets_running_ones_finish(models_dir: Path):
    with (
        serving(models_dir, max_new_tokens_cap=LONG_TOKENS) as server,
        AttnserveClient(server.target) as client,
    ):
        running = client.summarize_stream(TEXT, **DRAIN_REQUEST)
        wait_until(lambda: server.engine.running_rows() == LONG_REQUEST_ROWS, what="it to run")

        drained = server.start_drain()
        refused = first_refusal(client)
        with pytest.raises(grpc.RpcError) as again:
            client.summarize(TEXT, **SHORT_REQUEST)
        still_running = not running.done()
        final = list(running)[-1]
        drained.result(timeout=30)

    assert refused.code() in SENT_AWAY, refused.details()
    assert again.value.code() == grpc.StatusCode.UNAVAILABLE, again.value.details()
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
    raise AssertionError(f"requests were still served {timeout} s after the drain began")


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

    assert refused.code() in SENT_AWAY, refused.details()
    assert "".join(chunk.text_delta for chunk in [first, *rest])
    assert rest[-1].finish_reason and rest[-1].output_tokens == LONG_TOKENS
    assert process.wait(timeout=60) == 0


def test_a_call_that_outlives_the_engine_holds_the_stop_only_briefly(models_dir: Path):
    """A health Watch (client-side health checking) never ends on its own: once the engine has
    drained, it gets the short stop grace, not the rest of the 30 s drain time."""
    with (
        serving(models_dir) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        server.start_drain().result(timeout=20)
        assert time.monotonic() - started < STOP_GRACE_SECONDS + 5
