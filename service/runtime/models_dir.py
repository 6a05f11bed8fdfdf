"""The models directory: which model versions it holds, in either of its two layouts.

Flat (the exporter's output as is): DIR/<dir>/model.json; name and version come from the
manifest. Repository (Triton's): DIR/<name>/<version>/model.json, the version a positive
integer; the directory names win over the manifest's, so publishing a version is copying a
directory. Scanning reads listings (and flat manifests) only: loading graphs is the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest

Fingerprint = tuple[tuple[str, int, int], ...]
LOST_AND_FOUND = "lost+found"


@dataclass(frozen=True)
class VersionDir:
    """One model version on disk, complete enough to try loading (its model.json is there)."""

    name: str
    version: str
    path: Path
    fingerprint: Fingerprint
    """(file, size, mtime) of every file: it changes while a copy is still writing."""

    def manifest(self) -> ModelManifest:
        """The checked manifest, named as the layout names it; ManifestError if unusable."""
        return ModelManifest.load(self.path, self.name, self.version)


@dataclass
class RepositoryScan:
    versions: list[VersionDir] = field(default_factory=list)
    pending: dict[Path, str] = field(default_factory=dict)
    """Directories that may still be being copied (no model.json yet), with why they wait."""
    invalid: dict[Path, str] = field(default_factory=dict)
    """Directories that can never be served as they are, with why."""


def version_key(version: str) -> tuple:
    """Orders versions numerically where they are numbers ("10" after "9")."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


def fingerprint(directory: Path) -> Fingerprint:
    entries = []
    for path in sorted(directory.rglob("*")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted while we looked: the next scan sees the change
            continue
        if path.is_file():
            entries.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def scan_models_dir(models_dir: Path) -> RepositoryScan:
    """Every model version under `models_dir`, in either layout; hidden entries are skipped (a
    copy can be staged in DIR/.tmp and renamed into place), and so is lost+found."""
    scan = RepositoryScan()
    seen: dict[tuple[str, str], Path] = {}
    for entry in _visible_dirs(models_dir):
        if (entry / MANIFEST_FILE).is_file():
            found = _flat_version(entry, scan)
        else:
            found = _repository_versions(entry, scan)
        for version in found:
            key = (version.name, version.version)
            if key in seen:
                scan.invalid[version.path] = (
                    f"model {version.name!r} version {version.version} is already in {seen[key]}"
                )
                continue
            seen[key] = version.path
            scan.versions.append(version)
    return scan


def _visible_dirs(directory: Path) -> list[Path]:
    """Its subdirectories but hidden ones and ext4's lost+found (root's, unreadable to the
    server's user, at the root of every ext4 volume a models claim may be)."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != LOST_AND_FOUND
    )


def _flat_version(model_dir: Path, scan: RepositoryScan) -> list[VersionDir]:
    try:
        manifest = ModelManifest.load(model_dir)
    except ManifestError as exc:
        scan.invalid[model_dir] = str(exc)
        return []
    return [VersionDir(manifest.name, manifest.version, model_dir, fingerprint(model_dir))]


def _repository_versions(model_dir: Path, scan: RepositoryScan) -> list[VersionDir]:
    versions = []
    subdirs = _visible_dirs(model_dir)
    if not subdirs:
        scan.pending[model_dir] = f"no {MANIFEST_FILE} and no version directories yet"
    for version_dir in subdirs:
        name = version_dir.name
        if not name.isdigit() or name.startswith("0"):
            scan.invalid[version_dir] = (
                f"version directory names are positive integers (as in Triton), not {name!r}"
            )
        elif not (version_dir / MANIFEST_FILE).is_file():
            scan.pending[version_dir] = f"no {MANIFEST_FILE} yet"
        else:
            files = fingerprint(version_dir)
            versions.append(VersionDir(model_dir.name, name, version_dir, files))
    return versions
