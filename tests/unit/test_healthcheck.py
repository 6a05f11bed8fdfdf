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
from tests.security.certificates import Certificates, make_certificates, openssl_available

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


@pytest.fixture
def tls_health_server(tmp_path) -> Iterator[tuple[str, Certificates]]:
    """A SERVING health service on a mutual-TLS port, with the certificates to reach it."""
    if not openssl_available():
        pytest.skip("the openssl command is needed to make the test certificates")
    certs = make_certificates(tmp_path)
    servicer = health.HealthServicer()
    servicer.set("", SERVING)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [certs.server.read()],
        root_certificates=certs.ca.cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", certs
    server.stop(grace=None)


def test_tls_port_is_probed_with_the_ca_and_client_certificate(tls_health_server):
    target, certs = tls_health_server
    flags = ["--target", target, "--ca-cert", str(certs.ca.cert)]
    client = ["--client-cert", str(certs.client.cert), "--client-key", str(certs.client.key)]
    assert main([*flags, *client, "--server-name", "localhost"]) == 0
    assert main(["--target", target, "--timeout", "1"]) == 1  # plaintext against TLS
    assert main([*flags, "--timeout", "1"]) == 1  # no client certificate: refused
