"""What a models directory serves at start: both layouts, the version policy, and the
directories refused (which stop the start, so an operator fixes them before serving)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from service.engine.config import EngineConfig
from service.engine.engine import Engine
from service.engine.model_repository import ModelLoadError
from service.runtime.manifest import ManifestError
from tests.integration.models import SUMMARIZER as EXPORTED_SUMMARIZER
from tests.repository.repository import SUMMARIZER, copy_model, publish, version_dir


def served(models_dir: Path, keep_versions: int = 1) -> list[tuple[str, str]]:
    engine = Engine.load(models_dir, EngineConfig(), keep_versions=keep_versions)
    return [(info.name, info.version) for info in engine.models()]


def test_the_directories_name_the_model_and_version_over_the_manifest(
    tmp_path: Path, summarizer_dir: Path
):
    publish(summarizer_dir, tmp_path, "renamed", 7)  # its manifest says tiny-summarizer 1

    assert served(tmp_path) == [("renamed", "7")]


def test_the_manifests_own_name_and_version_are_not_checked_where_directories_name_them(
    tmp_path: Path, summarizer_dir: Path
):
    """An older export's `--name org/model`, or a hand-written `"version": 1`, is not what the
    repository layout serves: such a version loaded before the manifest checks, and still does."""
    published = publish(summarizer_dir, tmp_path, "summarizer", 3)
    manifest = json.loads((published / "model.json").read_text())
    manifest.update(name="org/model", version=1)
    (published / "model.json").write_text(json.dumps(manifest))

    assert served(tmp_path) == [("summarizer", "3")]


def test_only_the_highest_keep_versions_are_loaded(tmp_path: Path, summarizer_dir: Path):
    for version in (1, 2, 10):
        publish(summarizer_dir, tmp_path, SUMMARIZER, version)

    assert served(tmp_path, keep_versions=2) == [(SUMMARIZER, "2"), (SUMMARIZER, "10")]


def test_flat_and_repository_layouts_serve_side_by_side(tmp_path: Path, summarizer_dir: Path):
    copy_model(summarizer_dir, tmp_path / "exported-as-is")
    publish(summarizer_dir, tmp_path, SUMMARIZER, 3)

    assert served(tmp_path) == [(SUMMARIZER, "3"), (EXPORTED_SUMMARIZER, "1")]


def test_a_version_directory_still_without_model_json_is_skipped(
    tmp_path: Path, summarizer_dir: Path, caplog: pytest.LogCaptureFixture
):
    publish(summarizer_dir, tmp_path, SUMMARIZER, 1)
    copy_model(summarizer_dir, version_dir(tmp_path, SUMMARIZER, 2), skip=["model.json"])
    caplog.set_level(logging.INFO, logger="service.engine.model_repository")

    assert served(tmp_path) == [(SUMMARIZER, "1")]
    assert f"{version_dir(tmp_path, SUMMARIZER, 2)}: no model.json yet" in caplog.text


def test_hidden_directories_and_lost_and_found_are_not_models(
    tmp_path: Path, summarizer_dir: Path, caplog: pytest.LogCaptureFixture
):
    """A staged copy (hidden) and an ext4 volume's lost+found (root's, 0700: reading it as the
    server's user failed the start) are not looked into."""
    publish(summarizer_dir, tmp_path, SUMMARIZER, 1)
    copy_model(summarizer_dir, tmp_path / ".incoming" / "half-copied", skip=["decoder.onnx"])
    (tmp_path / "lost+found" / "#1234").mkdir(parents=True)
    caplog.set_level(logging.INFO, logger="service.engine.model_repository")

    assert served(tmp_path) == [(SUMMARIZER, "1")]
    assert "lost+found" not in caplog.text and ".incoming" not in caplog.text


@pytest.mark.parametrize("name", ["v2", "02", "latest"])
def test_a_version_directory_not_named_by_a_positive_integer_stops_the_start(
    tmp_path: Path, summarizer_dir: Path, name: str
):
    publish(summarizer_dir, tmp_path, SUMMARIZER, 1)
    copy_model(summarizer_dir, tmp_path / SUMMARIZER / name)

    with pytest.raises(ManifestError, match=f"positive integers .*not '{name}'"):
        served(tmp_path)


def test_the_same_name_and_version_twice_stops_the_start(tmp_path: Path, summarizer_dir: Path):
    copy_model(summarizer_dir, tmp_path / "a")
    copy_model(summarizer_dir, tmp_path / "b")  # both say tiny-summarizer version 1

    with pytest.raises(ManifestError, match="version 1 is already in"):
        served(tmp_path)


def test_a_version_that_fails_to_load_stops_the_start(tmp_path: Path, summarizer_dir: Path):
    broken = publish(summarizer_dir, tmp_path, SUMMARIZER, 1)
    (broken / "decoder.onnx").write_bytes(b"not an onnx graph")

    with pytest.raises(ModelLoadError, match=f"{SUMMARIZER} version 1 from .*decoder.onnx"):
        served(tmp_path)


def test_an_empty_models_directory_stops_the_start(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no model directories"):
        served(tmp_path)
