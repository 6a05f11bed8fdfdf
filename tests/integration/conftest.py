"""Shared fixtures: the tiny exported models, a real server on 127.0.0.1 port 0 (in this process
or as `attnserve serve`), a client."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import LONG_TOKENS, MAX_NUM_BEAMS, export_tiny_models
from tests.integration.serve_process import ServeProcess, serve_in_subprocess


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_models(tmp_path_factory.mktemp("integration-models"))


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[InProcessServer]:
    with serving(
        models_dir, max_new_tokens_cap=LONG_TOKENS, max_num_beams=MAX_NUM_BEAMS
    ) as running:
        yield running


@pytest.fixture
def serve_process(models_dir: Path) -> Iterator[ServeProcess]:
    """`attnserve serve` in its own process, ready, with the long-request cap."""
    with serve_in_subprocess(models_dir, "--max-new-tokens-cap", str(LONG_TOKENS)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: InProcessServer) -> Iterator[AttnserveClient]:
    with AttnserveClient(server.target) as connected:
        yield connected


@pytest.fixture(scope="session")
def png_image() -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    image.paste((220, 40, 40), (5, 5, 20, 20))
    image.save(buffer, format="PNG")
    return buffer.getvalue()
