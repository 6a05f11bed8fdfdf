"""The HTTP port under the gRPC port's security settings: the same bearer tokens (401 without
one, 403 for a wrong one, health open), the same TLS certificate and client CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import SecuritySettings
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.http.curl import curl
from tests.security.certificates import Certificates
from tests.security.conftest import TOKENS


def _serving_http(models_dir: Path, security: SecuritySettings) -> Iterator[InProcessServer]:
    overrides = {"security": security, "http_port": 0}
    with serving(models_dir, server_overrides=overrides) as running:
        yield running


def _port(server: InProcessServer) -> int:
    assert server.server.rest is not None
    return server.server.rest.port


@pytest.fixture(scope="module")
def token_server(models_dir: Path, tokens_file: Path) -> Iterator[InProcessServer]:
    yield from _serving_http(models_dir, SecuritySettings(auth_tokens_file=tokens_file))


@pytest.fixture(scope="module")
def mtls_server(models_dir: Path, certificates: Certificates) -> Iterator[InProcessServer]:
    security = SecuritySettings(
        tls_cert=certificates.server.cert,
        tls_key=certificates.server.key,
        tls_client_ca=certificates.ca.cert,
    )
    yield from _serving_http(models_dir, security)


def test_a_request_without_a_token_is_401(token_server: InProcessServer):
    answer = curl(f"http://127.0.0.1:{_port(token_server)}/v1/models")
    assert answer.status == 401 and "bearer token" in answer.json()["error"]


def test_a_wrong_token_is_403(token_server: InProcessServer):
    url = f"http://127.0.0.1:{_port(token_server)}/v1/models"
    answer = curl("-H", "Authorization: Bearer wrong-token", url)
    assert answer.status == 403


@pytest.mark.parametrize("token", TOKENS)
def test_an_accepted_token_is_served(token_server: InProcessServer, token: str):
    url = f"http://127.0.0.1:{_port(token_server)}/v1/models"
    assert curl("-H", f"Authorization: Bearer {token}", url).status == 200


def test_an_unknown_path_without_a_token_is_401_not_404(token_server: InProcessServer):
    assert curl(f"http://127.0.0.1:{_port(token_server)}/v2/secret").status == 401


def test_health_needs_no_token(token_server: InProcessServer):
    assert curl(f"http://127.0.0.1:{_port(token_server)}/v2/health/ready").status == 200


def test_tls_with_a_client_certificate_is_served(
    mtls_server: InProcessServer, certificates: Certificates
):
    answer = curl(
        *("--cacert", str(certificates.ca.cert)),
        *("--cert", str(certificates.client.cert), "--key", str(certificates.client.key)),
        f"https://127.0.0.1:{_port(mtls_server)}/v2/health/ready",
    )
    assert answer.status == 200


def test_a_client_without_a_certificate_is_refused(
    mtls_server: InProcessServer, certificates: Certificates
):
    url = f"https://127.0.0.1:{_port(mtls_server)}/v2/health/ready"
    curl("--cacert", str(certificates.ca.cert), url, connects=False)


def test_plaintext_http_is_refused_on_a_tls_port(mtls_server: InProcessServer):
    answer = curl(f"http://127.0.0.1:{_port(mtls_server)}/v2/health/ready", connects=False)
    assert answer.status == 0
