"""`attnserve serve` refuses to start, with a clear log line, when it cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main

LOCAL = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]


def test_bad_settings_exit_2_naming_the_setting(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert main(["serve", "--models", str(tmp_path), *LOCAL, "--max-queue", "0"]) == 2
    assert "max_queue must be > 0" in caplog.text


def test_a_models_directory_without_models_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    assert main(["serve", "--models", str(tmp_path), *LOCAL]) == 1
    assert f"cannot load the models in {tmp_path}" in caplog.text
    assert "no model directories" in caplog.text
