"""`attnserve serve` settings: flags win over ATTNSERVE_* variables, which win over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import MIB, SettingsError, settings_from_args


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", *flags])


def test_flags_win_over_environment_variables(tmp_path: Path):
    environ = {"ATTNSERVE_PORT": "7000", "ATTNSERVE_MAX_QUEUE": "9"}

    settings = settings_from_args(serve_args("--models", str(tmp_path), "--port", "6000"), environ)

    assert (settings.port, settings.engine.max_queue) == (6000, 9)


def test_every_setting_can_come_from_the_environment(tmp_path: Path):
    environ = {
        "ATTNSERVE_MODELS": str(tmp_path),
        "ATTNSERVE_HOST": "::1",
        "ATTNSERVE_DRAIN_SECONDS": "2.5",
        "ATTNSERVE_DEVICE": "cpu",
        "ATTNSERVE_MAX_BATCH_ROWS": "16",
        "ATTNSERVE_KV_BUDGET_MB": "64",
    }

    settings = settings_from_args(serve_args(), environ)

    assert settings.models == tmp_path
    assert settings.address == "[::1]:50051"
    assert settings.drain_seconds == 2.5
    assert (settings.engine.max_batch_rows, settings.engine.kv_budget_bytes) == (16, 64 * MIB)


def test_unset_settings_take_the_defaults(tmp_path: Path):
    settings = settings_from_args(serve_args("--models", str(tmp_path)), {})

    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 50051, 9090)


HERE = "{models}"  # replaced by an existing directory


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ((), {}, "--models DIR or set ATTNSERVE_MODELS"),
        (("--models", "/no/such/dir"), {}, "/no/such/dir"),
        (("--models", HERE, "--port", "70000"), {}, "port must be between 0 and 65535"),
        (
            (),
            {"ATTNSERVE_MODELS": HERE, "ATTNSERVE_MAX_QUEUE": "many"},
            "'many' is not a valid int",
        ),
        (("--models", HERE, "--max-queue", "0"), {}, "max_queue must be > 0"),
        (("--models", HERE, "--max-num-beams", "64"), {}, "max_num_beams (64)"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(tmp_path: Path, flags, environ, message):
    flags = [str(tmp_path) if flag == HERE else flag for flag in flags]
    environ = {name: str(tmp_path) if value == HERE else value for name, value in environ.items()}

    with pytest.raises(SettingsError) as raised:
        settings_from_args(serve_args(*flags), environ)

    assert message in str(raised.value)
