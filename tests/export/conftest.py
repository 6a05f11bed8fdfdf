"""Tiny text checkpoints and their exports, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.exporter import export_model
from tests.fixtures.tiny_text_models import BUILDERS


@pytest.fixture(scope="session")
def text_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Lazily built checkpoint directories, by family name (bart, pegasus, t5)."""
    root = tmp_path_factory.mktemp("text-checkpoints")
    return LazyDirs(lambda name: BUILDERS[name](root / name))


@pytest.fixture(scope="session")
def text_exports(text_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Lazily exported fp32 model directories, by family name."""
    root = tmp_path_factory.mktemp("text-exports")
    return LazyDirs(lambda name: _export(text_checkpoints[name], root / name))


def _export(checkpoint: Path, output: Path) -> Path:
    export_model(checkpoint, "summarization", output, progress=lambda _: None)
    return output


class LazyDirs(dict):
    """A dict that builds a missing entry on first access, so tests pay only for what they use."""

    def __init__(self, build) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, name: str) -> Path:
        self[name] = self._build(name)
        return self[name]
