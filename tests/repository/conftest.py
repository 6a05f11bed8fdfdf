"""Fixtures of the model repository tests: the tiny exported models (exported once per test
session) laid out as DIR/<name>/<version>/, and servers polling such a directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.fixtures.served_models import tiny_models_once
from tests.integration.models import CAPTIONER as EXPORTED_CAPTIONER
from tests.integration.models import LONG_TOKENS
from tests.integration.models import SUMMARIZER as EXPORTED_SUMMARIZER
from tests.repository.repository import CAPTIONER, POLL_SECONDS, SUMMARIZER, publish

LIMITS = {"max_new_tokens_cap": LONG_TOKENS}


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models_once(tmp_path_factory)


@pytest.fixture(scope="session")
def summarizer_dir(exported: Path) -> Path:
    return exported / EXPORTED_SUMMARIZER


@pytest.fixture(scope="session")
def captioner_dir(exported: Path) -> Path:
    return exported / EXPORTED_CAPTIONER


@pytest.fixture
def repository(tmp_path: Path, summarizer_dir: Path, captioner_dir: Path) -> Path:
    """The summarizer and the captioner, each at version 1, in the repository layout."""
    root = tmp_path / "repository"
    publish(summarizer_dir, root, SUMMARIZER, 1)
    shutil.copytree(captioner_dir, root / CAPTIONER / "1")
    return root


@pytest.fixture
def polling_server(repository: Path) -> Iterator[InProcessServer]:
    """A server polling `repository` every POLL_SECONDS, serving each model's newest version."""
    overrides = {"poll_seconds": POLL_SECONDS, "keep_versions": 1}
    with serving(repository, server_overrides=overrides, **LIMITS) as running:
        yield running


@pytest.fixture
def client(polling_server: InProcessServer) -> Iterator[AttnserveClient]:
    with AttnserveClient(polling_server.target) as connected:
        yield connected
