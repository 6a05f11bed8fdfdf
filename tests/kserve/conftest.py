"""A real attnserve server on 127.0.0.1 port 0 serving the demo models, for tritonclient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.inprocess_server import serving
from tests.fixtures.models_env import demo_models_dir


@dataclass
class RunningServer:
    target: str  # host:port
    summarizer: str  # the default model of each task
    captioner: str


@pytest.fixture(scope="session")
def kserve_server() -> Iterator[RunningServer]:
    with serving(demo_models_dir()) as server:
        assert server.engine is not None
        defaults = {info.task: info.name for info in server.engine.models() if info.is_default}
        yield RunningServer(server.target, defaults["summarization"], defaults["captioning"])
