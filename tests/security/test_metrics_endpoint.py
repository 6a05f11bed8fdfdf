"""/metrics as operators lock it down: bound to a chosen address, over TLS with the server's
certificate, behind the gRPC port's bearer tokens; plain and open by default (docs/security.md)."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service.api.metrics_http import start_metrics_server
from service.metrics import ServerMetrics
from tests.security.certificates import Certificates
from tests.security.conftest import TOKENS


def _get(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            assert b"attnserve_event_loop_lag_seconds" in response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _serving(**kwargs):
    server, port = start_metrics_server(ServerMetrics(), "127.0.0.1", 0, **kwargs)
    return server, port


def test_plain_metrics_need_nothing():
    server, port = _serving()
    try:
        assert _get(f"http://127.0.0.1:{port}/metrics") == 200
    finally:
        server.shutdown()
        server.server_close()


def test_token_protected_metrics_refuse_without_and_with_a_wrong_token():
    server, port = _serving(tokens=list(TOKENS))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert _get(url) == 401
        assert _get(url, token="wrong") == 403
        assert _get(url, token=TOKENS[1]) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_tls_metrics_speak_only_tls(certificates: Certificates):
    pair = certificates.server
    server, port = _serving(tls=(pair.cert, pair.key), tokens=list(TOKENS))
    context = ssl.create_default_context(cafile=str(certificates.ca.cert))
    try:
        assert _get(f"https://127.0.0.1:{port}/metrics", TOKENS[0], context) == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/metrics", TOKENS[0])
        with socket.create_connection(("127.0.0.1", port)):  # connects, never says a word
            assert _get(f"https://127.0.0.1:{port}/metrics", TOKENS[0], context) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_settings_that_cannot_work_stop_the_server(models_dir: Path):
    from argparse import Namespace

    from service.config import SettingsError, settings_from_args

    base = {"models": str(models_dir)}
    with pytest.raises(SettingsError, match="metrics_tls needs tls_cert"):
        settings_from_args(Namespace(**base, metrics_tls=True), environ={})
    with pytest.raises(SettingsError, match="metrics_auth needs auth_tokens_file"):
        settings_from_args(Namespace(**base, metrics_auth=True), environ={})
