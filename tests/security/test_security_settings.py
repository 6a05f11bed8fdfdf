"""Security settings from flags and ATTNSERVE_* variables, and the checks that stop the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser, main
from service.config import MIB, SettingsError, settings_from_args
from tests.security.certificates import Certificates

LOCAL = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]


def settings(models: Path, *flags: str, environ: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", "--models", str(models), *flags])
    return settings_from_args(args, environ or {})


def test_tls_and_token_flags_become_security_settings(tmp_path: Path, tokens_file: Path):
    cert, key, ca = (tmp_path / name for name in ("cert.pem", "key.pem", "ca.pem"))
    for path in (cert, key, ca):
        path.write_text("-----BEGIN PLACEHOLDER-----\n")

    security = settings(
        tmp_path,
        *("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca)),
        *("--auth-tokens-file", str(tokens_file), "--no-auth-open-health"),
    ).security

    assert (security.tls_cert, security.tls_key, security.tls_client_ca) == (cert, key, ca)
    assert security.auth_tokens_file == tokens_file
    assert not security.auth_open_health and security.auth_open_reflection


def test_security_settings_come_from_the_environment(tmp_path: Path, tokens_file: Path):
    environ = {
        "ATTNSERVE_AUTH_TOKENS_FILE": str(tokens_file),
        "ATTNSERVE_AUTH_OPEN_REFLECTION": "false",
        "ATTNSERVE_MAX_MESSAGE_MB": "3",
        "ATTNSERVE_LOG_REQUESTS": "true",
    }
    loaded = settings(tmp_path, environ=environ)

    assert loaded.security.auth_tokens_file == tokens_file
    assert not loaded.security.auth_open_reflection
    assert loaded.receive_limit_bytes == 3 * MIB
    assert loaded.log_requests


def test_the_message_limit_defaults_to_room_for_the_largest_image(tmp_path: Path):
    loaded = settings(tmp_path, "--max-image-mb", "5")

    assert loaded.receive_limit_bytes == 6 * MIB
    assert not loaded.log_requests


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "cert.pem"], "tls_cert and tls_key must be given together"),
        (["--tls-client-ca", "ca.pem"], "needs tls_cert and tls_key"),
        (["--auth-tokens-file", "no-such-file"], "auth_tokens_file 'no-such-file' is not"),
        (["--max-message-mb", "0"], "max_message_mb must be > 0"),
    ],
)
def test_an_unusable_security_setting_is_named(tmp_path: Path, flags: list[str], message: str):
    with pytest.raises(SettingsError, match=message):
        settings(tmp_path, *flags)


def test_serve_with_an_empty_tokens_file_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    empty = tmp_path / "tokens"
    empty.write_text("\n")

    assert main(["serve", "--models", str(tmp_path), *LOCAL, "--auth-tokens-file", str(empty)]) == 2
    assert "holds no tokens" in caplog.text


def test_serve_with_a_key_that_is_not_pem_exits_2(
    tmp_path: Path, certificates: Certificates, caplog: pytest.LogCaptureFixture
):
    not_pem = tmp_path / "key.der"
    not_pem.write_bytes(b"\x30\x82 not a pem file")
    tls = ["--tls-cert", str(certificates.server.cert), "--tls-key", str(not_pem)]

    assert main(["serve", "--models", str(tmp_path), *LOCAL, *tls]) == 2
    assert "is not a PEM file" in caplog.text
