"""A serving version whose directory goes missing is kept for one more poll: tools that replace
a directory in two renames (the old one aside, the new one in, as the PVC load Job does with
busybox, which has no `mv --exchange`) leave a moment without it, and a poll landing there must
not unload the model. Polls are driven by hand here (ModelRepository.reconcile on real files and
real ONNX Runtime sessions), so the poll that lands in the gap is not left to timing."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.engine.config import EngineConfig
from service.engine.model_repository import ModelRepository
from service.engine.served_model import ServedModel
from tests.repository.repository import CAPTIONER, SUMMARIZER, stage, version_dir


def _dirs(serving: list[ServedModel]) -> set[Path]:
    return {served.model.model_dir for served in serving}


def _started(repository: Path) -> tuple[ModelRepository, list[ServedModel]]:
    models = ModelRepository(repository, EngineConfig(), keep_versions=1)
    return models, [loaded.served for loaded in models.load_initial()]


def test_a_poll_between_the_two_renames_of_a_replacement_keeps_the_version(
    repository: Path, summarizer_dir: Path
) -> None:
    models, serving = _started(repository)
    target = version_dir(repository, SUMMARIZER, 1)
    replacement = stage(summarizer_dir, repository, SUMMARIZER, 1)

    target.rename(repository / ".staging" / "replaced")  # the first rename
    assert models.reconcile(serving) is None  # a poll in the gap: nothing changes
    replacement.rename(target)  # the second rename
    assert models.reconcile(serving) is None
    assert models.reconcile(serving) is None  # and it stays, with its directory back


def test_a_version_gone_for_two_polls_is_unloaded(repository: Path) -> None:
    models, serving = _started(repository)
    shutil.rmtree(version_dir(repository, SUMMARIZER, 1))

    assert models.reconcile(serving) is None  # the poll of grace
    reload = models.reconcile(serving)

    assert reload is not None and reload.loaded == []
    assert _dirs(reload.serving) == {version_dir(repository, CAPTIONER, 1)}


def test_a_lower_version_takes_over_only_after_the_poll_of_grace(
    repository: Path, summarizer_dir: Path
) -> None:
    shutil.copytree(summarizer_dir, version_dir(repository, SUMMARIZER, 2))
    models, serving = _started(repository)
    newest, older = (version_dir(repository, SUMMARIZER, v) for v in (2, 1))
    assert newest in _dirs(serving) and older not in _dirs(serving)
    shutil.rmtree(newest)

    assert models.reconcile(serving) is None  # version 2 serves on from memory for a poll
    reload = models.reconcile(serving)

    assert reload is not None and [loaded.served.model.model_dir for loaded in reload.loaded] == [
        older
    ]
    assert _dirs(reload.serving) == {older, version_dir(repository, CAPTIONER, 1)}
