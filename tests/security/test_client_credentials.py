"""`attnserve client` and AttnserveClient with a CA certificate, a client certificate and a
bearer token, against a server that needs TLS and a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.client.grpc_client import TOKEN_ENV
from service.config import SecuritySettings
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.security.certificates import Certificates
from tests.security.conftest import TOKENS


@pytest.fixture(scope="module")
def server(
    models_dir: Path, certificates: Certificates, tokens_file: Path
) -> Iterator[InProcessServer]:
    security = SecuritySettings(
        tls_cert=certificates.server.cert,
        tls_key=certificates.server.key,
        auth_tokens_file=tokens_file,
    )
    with serving(models_dir, server_overrides={"security": security}) as running:
        yield running


def run_cli(server: InProcessServer, certificates: Certificates, *args: str) -> int:
    ca = ["--ca-cert", str(certificates.ca.cert)]
    return main(["client", "--target", server.target, *ca, *args, "models"])


def test_the_cli_lists_models_over_tls_with_a_token(
    server: InProcessServer, certificates: Certificates, capsys: pytest.CaptureFixture
):
    assert run_cli(server, certificates, "--token", TOKENS[0]) == 0
    assert "tiny-summarizer" in capsys.readouterr().out


def test_the_cli_takes_its_token_from_the_environment(
    server: InProcessServer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv(TOKEN_ENV, TOKENS[1])

    assert run_cli(server, certificates) == 0


def test_the_cli_without_a_token_prints_unauthenticated(
    server: InProcessServer,
    certificates: Certificates,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    assert run_cli(server, certificates) == 1
    assert capsys.readouterr().err.startswith("error: UNAUTHENTICATED: ")


def test_a_client_certificate_without_its_key_exits_2(
    server: InProcessServer, certificates: Certificates, capsys: pytest.CaptureFixture
):
    half_pair = ["--client-cert", str(certificates.client.cert)]

    assert run_cli(server, certificates, *half_pair) == 2
    assert "private key go together" in capsys.readouterr().err


def test_an_unreadable_ca_file_exits_2(
    server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture
):
    missing = tmp_path / "no-ca.pem"

    assert main(["client", "--target", server.target, "--ca-cert", str(missing), "models"]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
