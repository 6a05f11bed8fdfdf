"""The HTTP port and tracing settings: off by default, from flags or ATTNSERVE_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import SettingsError, settings_from_args
from tests.unit.test_config import serve_args


def test_http_and_tracing_are_off_by_default(tmp_path: Path):
    settings = settings_from_args(serve_args("--models", str(tmp_path)), {})

    assert (settings.http_port, settings.otlp_endpoint) == (None, None)


def test_http_port_and_otlp_endpoint_come_from_flags_or_environment(tmp_path: Path):
    environ = {"ATTNSERVE_OTLP_ENDPOINT": "http://127.0.0.1:4317", "ATTNSERVE_HTTP_PORT": "9"}

    settings = settings_from_args(
        serve_args("--models", str(tmp_path), "--http-port", "8000"), environ
    )

    assert (settings.http_port, settings.otlp_endpoint) == (8000, "http://127.0.0.1:4317")


def test_an_http_port_out_of_range_is_named(tmp_path: Path):
    with pytest.raises(SettingsError, match="http_port must be between 0 and 65535"):
        settings_from_args(serve_args("--models", str(tmp_path), "--http-port", "70000"), {})
