"""`python -m service.client.healthcheck` (the image's HEALTHCHECK) against a real grpc.health.v1
server on 127.0.0.1 port 0."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.client.healthcheck import is_serving, main

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def health_server() -> Iterator[tuple[health.HealthServicer, str]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serving_server_exits_zero(health_server):
    servicer, target = health_server
    servicer.set("", SERVING)
    assert main(["--target", target]) == 0


def test_loading_or_draining_server_exits_one(health_server):
    servicer, target = health_server
    servicer.set("", NOT_SERVING)
    assert is_serving(target) == (False, "NOT_SERVING")
    assert main(["--target", target]) == 1


def test_unknown_service_is_not_serving(health_server):
    servicer, target = health_server
    servicer.set("", SERVING)
    serving, why = is_serving(target, service="no.such.Service")
    assert not serving
    assert why.startswith("NOT_FOUND")


def test_nothing_listening_exits_one_within_timeout():
    assert main(["--target", f"127.0.0.1:{_unused_port()}", "--timeout", "0.5"]) == 1


def test_default_target_reads_attnserve_port(health_server):
    servicer, target = health_server
    servicer.set("", SERVING)
    port = target.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "service.client.healthcheck"],
        env={"ATTNSERVE_PORT": port, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{target}: SERVING"
