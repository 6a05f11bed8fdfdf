"""Publishing model versions into a repository as an operator would, and watching a server pick
them up: real copies of the tiny exported models, real files, bounded waits."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
from PIL import Image

from service.client import AttnserveClient
from service.metrics import ServerMetrics
from service.runtime.manifest import MANIFEST_FILE
from tests.integration.models import SHORT_REQUEST, TEXT, wait_until

SUMMARIZER = "summarizer"  # the tiny summarizer, published under the repository layout
CAPTIONER = "captioner"
POLL_SECONDS = 0.1
SWITCH_WITHIN_S = 30.0  # poll + load + warm-up of a tiny model, on a busy two-core machine


def version_dir(repository: Path, name: str, version: int) -> Path:
    return repository / name / str(version)


def copy_model(source: Path, target: Path, skip: Iterable[str] = ()) -> Path:
    """Copy the model directory `source` to `target`, model.json last (a careful operator's
    order), leaving out the files in `skip` (a copy still in progress)."""
    target.mkdir(parents=True)
    for path in sorted(source.iterdir(), key=lambda path: path.name == MANIFEST_FILE):
        if path.name not in set(skip):
            shutil.copyfile(path, target / path.name)
    return target


def stage(source: Path, repository: Path, name: str, version: int) -> Path:
    """A copy under repository/.staging (hidden: never scanned), to rename into place."""
    return copy_model(source, repository / ".staging" / name / str(version))


def publish(source: Path, repository: Path, name: str, version: int) -> Path:
    """Stage a copy, then rename it into repository/name/version in one step."""
    staged = stage(source, repository, name, version)
    target = version_dir(repository, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    return staged.rename(target)


def served_versions(client: AttnserveClient, name: str) -> list[str]:
    return [model.version for model in client.list_models() if model.name == name]


def wait_for_versions(client: AttnserveClient, name: str, versions: list[str]) -> float:
    """Wait until ListModels shows exactly `versions` of `name`; returns the seconds it took."""
    started = time.monotonic()
    wait_until(
        lambda: served_versions(client, name) == versions,
        SWITCH_WITHIN_S,
        f"{name} served at versions {versions}",
    )
    return time.monotonic() - started


def answering_version(client: AttnserveClient, version: str = "") -> str:
    """The version that answers a short summary request (naming `version`, if given)."""
    answer = client.summarize(TEXT, model=SUMMARIZER, version=version, timeout=60, **SHORT_REQUEST)
    return answer.model_version


def status_of(call) -> grpc.StatusCode | None:
    """The call's error status, None if it succeeded."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return None


def loaded_versions(metrics: ServerMetrics, name: str) -> list[str]:
    """Versions of `name` that /metrics reports as loaded (attnserve_model_info)."""
    return sorted(
        sample.labels["version"]
        for family in metrics.registry.collect()
        if family.name == "attnserve_model_info"
        for sample in family.samples
        if sample.labels["model"] == name
    )


def series_of_version(metrics: ServerMetrics, name: str, version: str) -> list[str]:
    """The names of the samples /metrics holds for one version of `name`."""
    return [
        sample.name
        for family in metrics.registry.collect()
        for sample in family.samples
        if (sample.labels.get("model"), sample.labels.get("version")) == (name, version)
    ]


def png_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (220, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()
