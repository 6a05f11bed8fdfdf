"""Fixtures of the security tests: the tiny exported models, test certificates, and a token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.served_models import tiny_models_once
from tests.security.certificates import Certificates, make_certificates, openssl_available

TOKENS = ("right-token", "second-token")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models_once(tmp_path_factory)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if not openssl_available():
        pytest.skip("the openssl command is needed to make the test certificates")
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("# accepted bearer tokens\n" + "\n\n".join(TOKENS) + "\n")
    return path
