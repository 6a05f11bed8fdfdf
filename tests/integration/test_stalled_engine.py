"""A hung engine is visible to liveness probes: while the step thread, with work to do, finishes
no step for --stall-seconds, health is NOT_SERVING; once steps move again, SERVING. Here the step
thread is held on the engine's own lock (what a deadlock would do) while a long request runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import LONG_TOKENS, TEXT, wait_until

STALL_SECONDS = 1.0
TOKENS = 600  # greedy: a second or two, so it runs when the lock is taken
SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


def test_health_follows_a_stalled_step_thread(models_dir: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="service.api.health")
    overrides = {"stall_seconds": STALL_SECONDS}
    with (
        serving(models_dir, max_new_tokens_cap=LONG_TOKENS, server_overrides=overrides) as server,
        AttnserveClient(server.target) as client,
    ):
        health = health_pb2_grpc.HealthStub(client.channel)

        def status() -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

        stream = client.summarize_stream(TEXT, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
        wait_until(lambda: server.engine.running_rows() > 0, what="the request to run")
        assert status() == SERVING
        with server.engine._cond:  # the step thread waits here: no step finishes
            wait_until(lambda: status() == NOT_SERVING, timeout=10, what="NOT_SERVING")
        wait_until(lambda: status() == SERVING, timeout=10, what="SERVING again")
        final = list(stream)[-1]

    assert final.output_tokens == TOKENS  # the request itself went on
    assert "has not finished for" in caplog.text and "move again" in caplog.text
