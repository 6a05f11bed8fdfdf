"""Tiny checkpoints and their exports, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.exporter import export_model
from tests.fixtures import tiny_image_models, tiny_text_models

BUILDERS = tiny_text_models.BUILDERS | tiny_image_models.BUILDERS
TASKS = {name: "summarization" for name in tiny_text_models.BUILDERS} | {
    name: "captioning" for name in tiny_image_models.BUILDERS
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Lazily built checkpoint directories, by name: bart, pegasus, t5 (summarization),
    vit-gpt2, vit-bert, blip (captioning)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return LazyDirs(lambda name: BUILDERS[name](root / name))


@pytest.fixture(scope="session")
def exports(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Lazily exported fp32 model directories, by checkpoint name."""
    root = tmp_path_factory.mktemp("exports")
    return LazyDirs(lambda name: _export(checkpoints[name], TASKS[name], root / name))


def _export(checkpoint: Path, task: str, output: Path) -> Path:
    export_model(checkpoint, task, output, progress=lambda _: None)
    return output


class LazyDirs(dict):
    """A dict that builds a missing entry on first access, so tests pay only for what they use."""

    def __init__(self, build) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, name: str) -> Path:
        self[name] = self._build(name)
        return self[name]
