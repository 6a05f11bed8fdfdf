"""The models new requests can reach: one immutable snapshot that the engine swaps whole.

A reload builds the next table off the step thread and the engine replaces its reference in one
assignment, so a request resolves against either the old set of versions or the new one, never
a mix, and the step loop only ever iterates a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.engine.served_model import ModelInfo, ServedModel
from service.errors import NotFound
from service.runtime.models_dir import version_key


class ModelTable:
    """Served models sorted by name and version; the default model of a task is the first name
    serving it, at its highest version."""

    def __init__(self, served: Iterable[ServedModel]) -> None:
        self.served: tuple[ServedModel, ...] = tuple(
            sorted(served, key=lambda s: (s.manifest.name, version_key(s.manifest.version)))
        )
        self._defaults: dict[str, str] = {}  # task -> model name
        newest: dict[str, ServedModel] = {}  # model name -> its highest version
        for s in self.served:
            self._defaults.setdefault(s.manifest.task, s.manifest.name)
            newest[s.manifest.name] = s
        self._default_models = {newest[name] for name in self._defaults.values()}

    def is_default(self, served: ServedModel) -> bool:
        """True for the one model version answering requests of its task that name none."""
        return served in self._default_models

    def infos(self) -> list[ModelInfo]:
        return [s.info(self.is_default(s)) for s in self.served]

    def find(
        self, name: str, task: str, version: str = "", retiring: Iterable[ServedModel] = ()
    ) -> ServedModel:
        """The model answering a request; NotFound naming what is served. A version named
        explicitly may also be one of `retiring` (replaced, not yet unloaded)."""
        name = name or self._defaults.get(task, "")
        candidates = [s for s in self.served if s.manifest.name == name]
        if not candidates:
            same_task = {s.manifest.name for s in self.served if s.manifest.task == task}
            known = ", ".join(sorted(same_task)) or "none"
            raise NotFound(f"unknown model {name!r} for task '{task}' ({task} models: {known})")
        if candidates[-1].manifest.task != task:
            raise NotFound(f"model {name!r} serves {candidates[-1].manifest.task}, not {task}")
        if not version:
            return candidates[-1]
        for served in (*candidates, *retiring):
            if (served.manifest.name, served.manifest.version) == (name, version):
                return served
        versions = ", ".join(s.manifest.version for s in candidates)
        raise NotFound(f"model {name!r} has no version {version!r} (served versions: {versions})")
