"""The tiny checkpoints the end-to-end tests compare the server with, each exported once per
session: (checkpoint directory, exported model directory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from export.exporter import export_model
from tests.fixtures.tiny_image_models import build_vit_gpt2
from tests.fixtures.tiny_text_models import build_bart, build_t5


def _export(tmp: Path, build: Callable[[Path], Path], task: str) -> tuple[Path, Path]:
    checkpoint = build(tmp / "checkpoint")
    model_dir = tmp / "model"
    export_model(checkpoint, task, model_dir, progress=lambda *_: None)
    return checkpoint, model_dir


@pytest.fixture(scope="session", params=["bart", "t5"])
def text_model(request, tmp_path_factory) -> tuple[Path, Path]:
    build = {"bart": build_bart, "t5": build_t5}[request.param]
    return _export(tmp_path_factory.mktemp(request.param), build, "summarization")


@pytest.fixture(scope="session")
def captioner(tmp_path_factory) -> tuple[Path, Path]:
    return _export(tmp_path_factory.mktemp("vit-gpt2"), build_vit_gpt2, "captioning")
