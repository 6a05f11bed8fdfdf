"""Bad inputs to `attnserve export` get a clear error, and a failed export leaves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from transformers import GPT2Config

from export.errors import ExportError
from export.exporter import export_model
from service.cli import main


def _export(model: Path | str, output: Path) -> None:
    export_model(model, "summarization", output, progress=lambda _: None)


def _copy_checkpoint(src: Path, dst: Path, *, without: str | None = None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(without) if without else None)
    return dst


def test_missing_checkpoint_directory_is_named(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        _export(tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ExportError, match="'gpt2' is not supported.*bart.*pegasus.*t5"):
        _export(tmp_path / "gpt2", tmp_path / "out")


def test_corrupt_weights_are_reported(text_checkpoints, tmp_path):
    checkpoint = _copy_checkpoint(text_checkpoints["bart"], tmp_path / "corrupt")
    (checkpoint / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(ExportError, match="cannot load the weights"):
        _export(checkpoint, tmp_path / "out")


def test_existing_output_directory_is_refused(text_checkpoints, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match="already exists"):
        _export(text_checkpoints["bart"], output)
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_failed_export_leaves_nothing_behind(text_checkpoints, tmp_path):
    """No tokenizer anywhere: the export fails after the graphs were written and validated."""
    checkpoint = _copy_checkpoint(
        text_checkpoints["bart"], tmp_path / "no-tokenizer", without="tokenizer.json"
    )
    outputs = tmp_path / "models"
    outputs.mkdir()
    with pytest.raises(ExportError, match="tokenizer"):
        _export(checkpoint, outputs / "bart")
    assert list(outputs.iterdir()) == []


def test_cli_reports_an_error_without_a_traceback(tmp_path, capsys):
    code = main(
        [
            "export",
            "--model",
            str(tmp_path / "absent"),
            "--task",
            "summarization",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    stderr = capsys.readouterr().err
    assert code != 0
    assert "error:" in stderr and "does not exist" in stderr
    assert "Traceback" not in stderr
