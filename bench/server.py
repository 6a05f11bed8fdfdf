"""`attnserve serve` in a child process, for the benchmark suite's server baselines.

The server runs in its own process, as in production, so that the load generator does not share
its interpreter. Both ports are found free just before the start (127.0.0.1 only).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.servicer import SERVICE_NAME

START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RunningServer:
    target: str  # host:port of the gRPC server
    metrics_url: str  # its Prometheus endpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_serving(target: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
            try:
                if stub.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"the server was not serving after {START_TIMEOUT_S:.0f} s; see {log}")


@contextmanager
def attnserve_server(models: Path, log: Path, *flags: str) -> Iterator[RunningServer]:
    """A serving `attnserve serve --models models` with extra `flags`; stopped with SIGTERM."""
    port, metrics_port = _free_port(), _free_port()
    command = [
        *(sys.executable, "-m", "service.cli", "serve", "--models", str(models)),
        *("--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)),
        *flags,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        try:
            target = f"127.0.0.1:{port}"
            _wait_serving(target, process, log)
            yield RunningServer(target, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
