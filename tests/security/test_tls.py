"""TLS and mutual TLS from certificate files, on a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import AttnserveClient
from service.config import SecuritySettings
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.security.certificates import Certificates

CALL_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def tls_server(models_dir: Path, certificates: Certificates) -> Iterator[InProcessServer]:
    security = SecuritySettings(tls_cert=certificates.server.cert, tls_key=certificates.server.key)
    with serving(models_dir, server_overrides={"security": security}) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(models_dir: Path, certificates: Certificates) -> Iterator[InProcessServer]:
    security = SecuritySettings(
        tls_cert=certificates.server.cert,
        tls_key=certificates.server.key,
        tls_client_ca=certificates.ca.cert,
    )
    with serving(models_dir, server_overrides={"security": security}) as server:
        yield server


def list_models_code(client: AttnserveClient) -> grpc.StatusCode:
    """OK if the call went through, else the status code it failed with."""
    with client:
        try:
            client.list_models(timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_a_client_trusting_the_server_ca_is_served(
    tls_server: InProcessServer, certificates: Certificates
):
    ca = certificates.ca.cert.read_bytes()
    with AttnserveClient(tls_server.target, root_certificates=ca) as client:
        answer = client.summarize("w1 w2 w3", max_new_tokens=4, timeout=CALL_TIMEOUT_S)

    assert answer.output_tokens == 4


def test_a_plaintext_client_cannot_reach_a_tls_server(tls_server: InProcessServer):
    assert list_models_code(AttnserveClient(tls_server.target)) == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_server_certificate_is_refused(
    tls_server: InProcessServer, certificates: Certificates
):
    client = AttnserveClient(
        tls_server.target, root_certificates=certificates.other_ca.cert.read_bytes()
    )
    assert list_models_code(client) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_serves_a_client_with_a_certificate_from_the_client_ca(
    mtls_server: InProcessServer, certificates: Certificates
):
    key, chain = certificates.client.read()
    client = AttnserveClient(
        mtls_server.target,
        root_certificates=certificates.ca.cert.read_bytes(),
        private_key=key,
        certificate_chain=chain,
    )
    assert list_models_code(client) == grpc.StatusCode.OK


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: InProcessServer, certificates: Certificates
):
    client = AttnserveClient(
        mtls_server.target, root_certificates=certificates.ca.cert.read_bytes()
    )
    assert list_models_code(client) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: InProcessServer, certificates: Certificates
):
    key, chain = certificates.other_client.read()
    client = AttnserveClient(
        mtls_server.target,
        root_certificates=certificates.ca.cert.read_bytes(),
        private_key=key,
        certificate_chain=chain,
    )
    assert list_models_code(client) == grpc.StatusCode.UNAVAILABLE
