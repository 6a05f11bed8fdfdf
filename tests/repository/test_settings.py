"""The repository settings of `attnserve serve`: flags, ATTNSERVE_* variables, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.config import SettingsError, settings_from_args


def settings(models: Path, *flags: str, **environ: str):
    args = build_parser().parse_args(["serve", "--models", str(models), *flags])
    return settings_from_args(args, environ)


def test_polling_is_off_and_one_version_is_kept_by_default(tmp_path: Path):
    defaults = settings(tmp_path)

    assert (defaults.poll_seconds, defaults.keep_versions) == (0.0, 1)


def test_flags_and_environment_set_polling_and_kept_versions(tmp_path: Path):
    from_flags = settings(tmp_path, "--poll-seconds", "2.5", "--keep-versions", "3")
    from_env = settings(tmp_path, ATTNSERVE_POLL_SECONDS="7", ATTNSERVE_KEEP_VERSIONS="2")

    assert (from_flags.poll_seconds, from_flags.keep_versions) == (2.5, 3)
    assert (from_env.poll_seconds, from_env.keep_versions) == (7.0, 2)


@pytest.mark.parametrize(
    "flags, named",
    [(["--poll-seconds", "-1"], "poll_seconds"), (["--keep-versions", "0"], "keep_versions")],
)
def test_bad_repository_settings_are_refused_naming_them(
    tmp_path: Path, flags: list[str], named: str
):
    with pytest.raises(SettingsError, match=named):
        settings(tmp_path, *flags)
