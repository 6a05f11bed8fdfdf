"""The PVC loader Job's script and the server pods' gate, run here on directories: a copy is
staged out of the server's sight, each model or version appears whole, `.loaded` comes last,
and a second load adds versions beside the first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

COMPONENT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components" / "models-pvc"


def _script(file: str, container_kind: str, source: Path, claim: Path) -> str:
    """The script of the component's container, its paths moved under the test's directories."""
    spec = yaml.safe_load((COMPONENT / file).read_text())["spec"]["template"]["spec"]
    (container,) = spec[container_kind]
    text = container["args"][0]
    return text.replace("/mnt/models", str(claim)).replace("/models", str(source))


def _model(directory: Path, marker: str) -> None:
    directory.mkdir(parents=True)
    (directory / "model.json").write_text(json.dumps({"marker": marker}))
    (directory / "decoder.onnx").write_text(marker)


def _load(source: Path, claim: Path) -> None:
    script = _script("load-job.yaml", "containers", source, claim)
    subprocess.run(["sh", "-c", script], check=True, timeout=30)


def test_models_appear_whole_and_the_mark_comes_last(tmp_path: Path):
    source, claim = tmp_path / "image", tmp_path / "claim"
    _model(source / "flat-model", "flat v1")
    _model(source / "repo-model" / "1", "repo v1")
    (source / ".checkpoints").mkdir()  # the demo image's training files: not for the server
    claim.mkdir()
    (claim / "lost+found").mkdir()

    _load(source, claim)

    assert sorted(p.name for p in claim.iterdir()) == [
        ".loaded",
        "flat-model",
        "lost+found",
        "repo-model",
    ]
    assert (claim / "repo-model" / "1" / "decoder.onnx").read_text() == "repo v1"


def test_a_second_load_adds_versions_and_replaces_flat_models(tmp_path: Path):
    first, second, claim = tmp_path / "first", tmp_path / "second", tmp_path / "claim"
    _model(first / "flat-model", "flat v1")
    _model(first / "repo-model" / "1", "repo v1")
    _model(second / "flat-model", "flat v2")
    _model(second / "repo-model" / "2", "repo v2")
    claim.mkdir()

    _load(first, claim)
    _load(second, claim)

    assert (claim / "flat-model" / "decoder.onnx").read_text() == "flat v2"
    assert sorted(p.name for p in (claim / "repo-model").iterdir()) == ["1", "2"]
    assert (claim / ".loaded").exists() and not (claim / ".incoming").exists()


def test_the_gate_waits_for_the_mark(tmp_path: Path):
    claim = tmp_path / "claim"
    _model(claim / "flat-model", "copied, but the Job has not finished")
    gate = _script("models-pvc.yaml", "initContainers", claim, claim)
    waiting = subprocess.Popen([sys.executable, "-c", gate], stdout=subprocess.PIPE, text=True)
    try:
        assert "waiting for" in (waiting.stdout.readline() if waiting.stdout else "")
        assert waiting.poll() is None
        (claim / ".loaded").touch()
        assert waiting.wait(timeout=15) == 0
    finally:
        waiting.kill()
