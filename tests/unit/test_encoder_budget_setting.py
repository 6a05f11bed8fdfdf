"""`--max-encoder-tokens-per-step`: reaches the engine's scheduler; 0 turns it off, below 0 is
refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import SettingsError, settings_from_args
from service.engine.config import EngineConfig


def _settings(tmp_path: Path, *flags: str, environ: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", "--models", str(tmp_path), *flags])
    return settings_from_args(args, environ or {})


def test_the_flag_and_its_variable_set_the_engines_encoder_budget(tmp_path: Path):
    flag = _settings(tmp_path, "--max-encoder-tokens-per-step", "0")
    variable = _settings(tmp_path, environ={"ATTNSERVE_MAX_ENCODER_TOKENS_PER_STEP": "2048"})
    assert flag.engine.max_encoder_tokens_per_step == 0
    assert variable.engine.max_encoder_tokens_per_step == 2048
    default = _settings(tmp_path).engine.max_encoder_tokens_per_step
    assert default == EngineConfig().max_encoder_tokens_per_step > 0


def test_a_negative_encoder_budget_is_refused_at_start(tmp_path: Path):
    with pytest.raises(SettingsError, match="max_encoder_tokens_per_step must be >= 0"):
        _settings(tmp_path, "--max-encoder-tokens-per-step", "-1")
