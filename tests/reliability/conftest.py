"""Fixtures of the reliability tests: the tiny exported models (exported once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.served_models import tiny_models_once


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models_once(tmp_path_factory)
