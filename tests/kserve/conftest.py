"""A real attnserve server on 127.0.0.1 port 0 serving the demo models, for tritonclient."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.inprocess_server import serving

MODELS_ENV = "ATTNSERVE_TEST_MODELS"


@dataclass
class RunningServer:
    target: str  # host:port
    summarizer: str  # the default model of each task
    captioner: str


@pytest.fixture(scope="session")
def kserve_server() -> Iterator[RunningServer]:
    models_dir = os.environ.get(MODELS_ENV, "")
    if not models_dir:
        pytest.skip(f"{MODELS_ENV} is not set: build the demo models (`make models`) and set it")
    with serving(Path(models_dir)) as server:
        assert server.engine is not None
        defaults = {info.task: info.name for info in server.engine.models() if info.is_default}
        yield RunningServer(server.target, defaults["summarization"], defaults["captioning"])
