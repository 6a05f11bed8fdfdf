"""`--encoder-threads`, `--encoder-nice`, `--spinning`: how the two sessions share the CPU's
cores (issue 19). They reach the engine from flags and ATTNSERVE_* variables, out-of-range
values are refused at start, and "auto" spinning is off exactly when encoders run beside the
decode steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import SettingsError, settings_from_args
from service.engine.config import EngineConfig
from service.runtime.sessions import SessionThreads


def _settings(tmp_path: Path, *flags: str, environ: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", "--models", str(tmp_path), *flags])
    return settings_from_args(args, environ or {})


def test_flags_and_variables_reach_the_sessions_thread_settings(tmp_path: Path):
    flags = _settings(
        tmp_path,
        *("--intra-op-threads", "2", "--encoder-threads", "1"),
        *("--encoder-nice", "10", "--spinning", "on"),
    ).engine
    assert flags.session_threads() == SessionThreads(decoder=2, encoder=1, spinning=True)
    assert flags.encoder_nice == 10
    environ = {"ATTNSERVE_ENCODER_THREADS": "3", "ATTNSERVE_SPINNING": "off"}
    variables = _settings(tmp_path, environ=environ).engine
    assert variables.session_threads() == SessionThreads(decoder=0, encoder=3, spinning=False)


@pytest.mark.parametrize("beside", [True, False])
def test_auto_spinning_is_off_beside_the_steps_and_on_inside_them(beside: bool):
    config = EngineConfig(encoder_beside_decode=beside, intra_op_threads=2)
    assert config.spinning == "auto"
    threads = config.session_threads()
    assert threads.spinning is not beside
    assert threads.encoder == threads.decoder == 2, "the encoder follows --intra-op-threads"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--encoder-threads", "-1"), "encoder_threads must be >= 0"),
        (("--encoder-nice", "20"), "encoder_nice must be within 0..19"),
        (("--encoder-nice", "-1"), "encoder_nice must be within 0..19"),
        (("--intra-op-threads", "-2"), "intra_op_threads must be >= 0"),
    ],
)
def test_out_of_range_thread_settings_are_refused_at_start(
    tmp_path: Path, flags: tuple[str, ...], message: str
):
    with pytest.raises(SettingsError, match=message):
        _settings(tmp_path, *flags)


def test_an_unknown_spinning_value_is_refused(tmp_path: Path):
    with pytest.raises(SystemExit):
        _settings(tmp_path, "--spinning", "sometimes")
    with pytest.raises(SettingsError, match="spinning must be one of"):
        _settings(tmp_path, environ={"ATTNSERVE_SPINNING": "sometimes"})
