"""Which model versions the engine serves, and loading them: at start and at each poll.

Policy, Triton's "latest N": for each model name, the `keep_versions` highest versions that
load are served, and the highest answers requests that name no version. A version that fails to
load (missing files, malformed manifest, graphs ONNX Runtime refuses, a failed warm-up run) is
refused with its reason logged; at start that stops the server, at a poll the serving versions
stay and the refused one is retried once its files change (a copy still in progress). Loading
runs on the poller's thread, never on the engine's step thread.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.manifest import MANIFEST_FILE, ManifestError
from service.runtime.model import LoadedModel
from service.runtime.models_dir import (
    Fingerprint,
    RepositoryScan,
    VersionDir,
    scan_models_dir,
    version_key,
)
from service.runtime.tasks import Task

log = logging.getLogger(__name__)

WARM_UP_TEXT = "warm up"
WARM_UP_PARAMS = GenerationParams(max_new_tokens=1, min_new_tokens=0, num_beams=1, do_sample=False)


class ModelLoadError(ValueError):
    """A model version that cannot be served as it is on disk (the cause is chained)."""


@dataclass
class Loaded:
    served: ServedModel
    seconds: float  # sessions, tokenizer and warm-up


@dataclass
class Reload:
    """What a poll changed: every version to serve from now on, and the newly loaded ones."""

    serving: list[ServedModel]
    loaded: list[Loaded]


class ModelRepository:
    """The models directory seen through the version policy; remembers refused versions."""

    def __init__(self, models_dir: Path, config: EngineConfig, keep_versions: int = 1) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.models_dir = Path(models_dir)
        self.config = config
        self.keep_versions = keep_versions
        self._refused: dict[Path, Fingerprint] = {}  # version dir -> its files when it failed
        self._reported: dict[Path, str] = {}  # skipped directories already logged, and why
        self._gone: set[Path] = set()  # serving versions' directories missing at the last poll

    def load_initial(self) -> list[Loaded]:
        """The versions the server starts with. Any failure is raised (OSError, ValueError or
        ModelLoadError): a server should not start on a repository its operator must fix."""
        if not self.models_dir.is_dir():
            raise FileNotFoundError(f"models directory {self.models_dir} does not exist")
        scan = scan_models_dir(self.models_dir)
        if scan.invalid:
            raise ManifestError("; ".join(f"{path}: {why}" for path, why in scan.invalid.items()))
        self._report_skipped(scan)
        chosen = [v for versions in _by_name(scan.versions) for v in versions[: self.keep_versions]]
        if not chosen:
            raise FileNotFoundError(
                f"no model directories (with {MANIFEST_FILE}) in {self.models_dir}"
            )
        return [self._load(version) for version in chosen]

    def reconcile(self, serving: Sequence[ServedModel]) -> Reload | None:
        """One poll: load what is new, choose what to serve; None if that is `serving` as is."""
        try:
            scan = scan_models_dir(self.models_dir)
        except OSError as exc:
            log.warning("cannot scan %s: %s; the serving versions stay", self.models_dir, exc)
            return None
        self._report_skipped(scan)
        on_disk = {version.path for version in scan.versions}
        self._refused = {p: f for p, f in self._refused.items() if p in on_disk}
        current = {served.model.model_dir: served for served in serving}
        gone = {path for path in current if not path.is_dir()}
        gone_twice, self._gone = gone & self._gone, gone
        chosen: list[ServedModel] = []
        loaded: list[Loaded] = []
        for versions in _by_name(_keeping_serving(scan.versions, serving, gone_twice)):
            kept = 0
            for version in versions:
                if kept == self.keep_versions:
                    break
                served = current.get(version.path) or self._try_load(version, loaded)
                if served is not None:
                    chosen.append(served)
                    kept += 1
        if {id(s) for s in chosen} == {id(s) for s in serving}:
            return None
        return Reload(chosen, loaded)

    def _try_load(self, version: VersionDir, loaded: list[Loaded]) -> ServedModel | None:
        if self._refused.get(version.path) == version.fingerprint:
            return None  # refused as it is now: retried once its files change
        try:
            result = self._load(version)
        except ModelLoadError as exc:
            self._refused[version.path] = version.fingerprint
            log.warning(
                "refused %s (the serving versions stay; it is retried when its files change)", exc
            )
            return None
        self._refused.pop(version.path, None)
        loaded.append(result)
        return result.served

    def _load(self, version: VersionDir) -> Loaded:
        """Sessions, tokenizer and a warm-up run; ModelLoadError naming the version if any of
        them fails, whatever the cause (ONNX Runtime raises its own exception types)."""
        started = time.perf_counter()
        config = self.config
        try:
            model = LoadedModel(
                version.path, version.manifest(), config.device, config.session_threads()
            )
            warm_up(model)
        except Exception as exc:
            raise ModelLoadError(
                f"{version.name} version {version.version} from {version.path}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        served = ServedModel(model, config)
        log.info(
            "loaded %s version %s from %s in %.2f s",
            *(version.name, version.version, version.path, seconds),
        )
        return Loaded(served, seconds)

    def _report_skipped(self, scan: RepositoryScan) -> None:
        """Log each skipped directory once (and again only if its reason changes)."""
        skipped = {**scan.pending, **scan.invalid}
        for path, why in skipped.items():
            if self._reported.get(path) != why:
                level = logging.INFO if path in scan.pending else logging.WARNING
                log.log(level, "skipping %s: %s", path, why)
        self._reported = skipped


def _keeping_serving(
    scanned: list[VersionDir], serving: Sequence[ServedModel], gone_twice: set[Path]
) -> list[VersionDir]:
    """The scanned versions, each serving version kept as it is until its directory has been
    missing at two polls in a row (`gone_twice`). A loaded version is immutable: its
    manifest caught mid-rewrite (invalid for a moment) or a copy of it under another directory
    (a duplicate, which the scan may prefer) must not take it out of service; another directory
    with its name and version is never served. The poll of grace covers tools that replace a
    directory in two renames (old one aside, new one in; no `mv --exchange` in busybox or over
    NFS): a scan between them must not unload a version that is back a moment later."""
    kept = {
        (served.manifest.name, served.manifest.version): served.model.model_dir
        for served in serving
        if served.model.model_dir not in gone_twice
    }
    as_is = [VersionDir(name, version, path, ()) for (name, version), path in kept.items()]
    return as_is + [v for v in scanned if (v.name, v.version) not in kept]


def _by_name(versions: list[VersionDir]) -> list[list[VersionDir]]:
    """Versions grouped by model name, highest version first."""
    groups: dict[str, list[VersionDir]] = {}
    for version in versions:
        groups.setdefault(version.name, []).append(version)
    return [
        sorted(versions, key=lambda v: version_key(v.version), reverse=True)
        for _, versions in sorted(groups.items())
    ]


def warm_up(model: LoadedModel) -> None:
    """One real encoder and decoder run before the version takes traffic: a graph that loads
    but cannot run is refused here, not in a client's request, and ONNX Runtime's first-run
    allocations are not a client's latency. It runs under default limits, not the server's
    request caps (its encoder inside the step: no thread of its own): it is no client's
    request."""
    sample = _warm_up_image() if model.manifest.task == Task.CAPTIONING else WARM_UP_TEXT
    config = EngineConfig(encoder_beside_decode=False)
    run_to_completion(ServedModel(model, config), [sample], [WARM_UP_PARAMS])


@cache
def _warm_up_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
