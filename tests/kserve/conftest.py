"""A real attnserve server on 127.0.0.1 port 0, serving the demo models, for blocking clients.

The server runs on its own event loop in a thread, so the unmodified (blocking) tritonclient
can call it from the test thread as it would call Triton.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MODELS_ENV = "ATTNSERVE_TEST_MODELS"


@dataclass
class RunningServer:
    target: str  # host:port
    summarizer: str  # model names (the default model of each task)
    captioner: str


def _demo_models_dir() -> Path:
    value = os.environ.get(MODELS_ENV, "")
    if not value:
        pytest.skip(f"{MODELS_ENV} is not set: build the demo models (`make models`) and set it")
    return Path(value)


@pytest.fixture(scope="session")
def kserve_server() -> Iterator[RunningServer]:
    models_dir = _demo_models_dir()
    from service.api.server import create_server
    from service.config import ServerSettings
    from service.engine.engine import Engine

    settings = ServerSettings(models=models_dir, host="127.0.0.1", port=0, drain_seconds=5.0)
    engine = Engine.load(models_dir, settings.engine)
    defaults = {info.task: info.name for info in engine.models() if info.is_default}

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="attnserve-test-server", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)

    server, port = run(create_server(settings, engine, "127.0.0.1:0"))
    try:
        yield RunningServer(f"127.0.0.1:{port}", defaults["summarization"], defaults["captioning"])
    finally:
        run(server.drain_and_stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
