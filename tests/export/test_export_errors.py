"""Bad inputs to `attnserve export` get a clear error, and a failed export leaves nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2Config

from export.errors import ExportError
from export.exporter import export_model
from service.cli import main
from service.runtime.manifest import ModelManifest
from tests.fixtures.tiny_text_models import build_bart


def _export(model: Path | str, output: Path) -> None:
    export_model(model, "summarization", output, progress=lambda _: None)


@pytest.fixture(scope="module")
def mismatching_checkpoint(tmp_path_factory) -> Path:
    """A BART whose generation_config suppresses most words: generate() applies that, the
    engine has no such setting, so the export's beam check finds different tokens."""
    return build_bart(
        tmp_path_factory.mktemp("suppressing"), generation={"suppress_tokens": list(range(4, 60))}
    )


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


def test_corrupt_weights_are_reported(checkpoints, tmp_path):
    checkpoint = _copy_checkpoint(checkpoints["bart"], tmp_path / "corrupt")
    (checkpoint / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(ExportError, match="cannot load the weights"):
        _export(checkpoint, tmp_path / "out")


def test_existing_output_directory_is_refused(checkpoints, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match="already exists"):
        _export(checkpoints["bart"], output)
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_failed_export_leaves_nothing_behind(checkpoints, tmp_path):
    """No tokenizer anywhere: the export fails after the graphs were written and validated."""
    checkpoint = _copy_checkpoint(
        checkpoints["bart"], tmp_path / "no-tokenizer", without="tokenizer.json"
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


def test_an_opset_outside_the_checked_ones_is_refused_before_loading(tmp_path):
    with pytest.raises(ExportError, match="opset must be in 13..21"):
        export_model(tmp_path / "absent", "summarization", tmp_path / "out", opset=7)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("a/b", "1"),
        ("ok", ""),
        ("ok", " "),
        ("..", "1"),
        (".", "1"),
        ("my model", "1"),
        ("a\\b", "1"),
        ("a?b", "1"),
        ("a#b", "1"),
        ("a%2Fb", "1"),
        ("ok", "1 2"),
    ],
)
def test_a_name_or_version_no_server_could_serve_is_refused_before_loading(
    tmp_path, name: str, version: str
):
    """`--name a/b` exported, and its URL (/v2/models/a/b) could not name it; nor can a URL
    name `..` (clients resolve it away), `a?b` (a query) or `my model` without escapes."""
    with pytest.raises(ExportError, match="must be a non-empty printable name without whitesp"):
        export_model(
            tmp_path / "absent", "summarization", tmp_path / "out", name=name, version=version
        )


def test_a_tokenizer_file_that_cannot_be_read_is_an_export_error(checkpoints, tmp_path):
    """The tokenizers library's bare Exception came out as a traceback."""
    checkpoint = _copy_checkpoint(checkpoints["bart"], tmp_path / "bad-tokenizer")
    (checkpoint / "tokenizer.json").write_text("garbage{{")
    with pytest.raises(ExportError, match="its tokenizer.json cannot be read"):
        _export(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_generation_config_is_an_error_not_silent_defaults(checkpoints, tmp_path):
    checkpoint = _copy_checkpoint(checkpoints["bart"], tmp_path / "corrupt-generation")
    (checkpoint / "generation_config.json").write_text("{oops")
    with pytest.raises(ExportError, match="cannot read .*generation_config.json"):
        _export(checkpoint, tmp_path / "out")


def test_generation_defaults_no_request_could_run_with_fail_the_export(checkpoints, tmp_path):
    """`"num_beams": "4"` exported, passed parity, and failed every default request."""
    checkpoint = _copy_checkpoint(checkpoints["bart"], tmp_path / "string-beams")
    settings = json.loads((checkpoint / "generation_config.json").read_text())
    (checkpoint / "generation_config.json").write_text(json.dumps({**settings, "max_length": -5}))
    with pytest.raises(ExportError, match="cannot be served as it is: .*max_length must be >= 1"):
        _export(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_names_an_output_path_it_cannot_write(checkpoints, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "out"
    args = ["--model", str(checkpoints["bart"]), "--task", "summarization"]
    assert main(["export", *args, "--output", str(output)]) == 1
    stderr = capsys.readouterr().err
    assert "attnserve export: error:" in stderr and "a-file" in stderr
    assert "Traceback" not in stderr


def test_parity_failure_fails_the_export_and_names_the_way_out(mismatching_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="beam tokens differ.*--allow-mismatch"):
        _export(mismatching_checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_allow_mismatch_writes_the_model_with_the_failing_report(
    mismatching_checkpoint, tmp_path, capsys
):
    output = tmp_path / "out"
    code = main(
        [
            "export",
            "--model",
            str(mismatching_checkpoint),
            "--task",
            "summarization",
            "--output",
            str(output),
            "--allow-mismatch",
        ]
    )
    assert code == 0
    assert "parity FAILED" in capsys.readouterr().out
    parity = ModelManifest.load(output).parity
    assert parity["passed"] is False
    assert parity["beam_tokens_identical"] is False and parity["beam_mismatched_rows"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stopped_export_leaves_nothing_and_says_so(checkpoints, tmp_path, stop: int):
    """SIGTERM (docker stop, systemd, a CI timeout) and SIGHUP (a closed terminal) ended the
    process without the clean-up Ctrl-C gets: a hidden staging directory stayed for good."""
    output = tmp_path / "models" / "stopped"
    output.parent.mkdir()
    arguments = ["export", "--model", str(checkpoints["bart"]), "--task", "summarization"]
    arguments += ["--output", str(output)]
    # The signals' usual handling, whatever this test runs under (a background job ignores
    # SIGINT, nohup SIGHUP: the export keeps an ignored SIGHUP ignored).
    launcher = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "signal.signal(signal.SIGHUP, signal.SIG_DFL); "
        f"sys.argv = ['attnserve', *{arguments!r}]; "
        "runpy.run_module('service.cli', run_name='__main__')"
    )
    command = [sys.executable, "-c", launcher]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the first progress line: the export has begun
        assert line.startswith("[export]"), line
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert "Traceback" not in stderr
    if stop == signal.SIGINT:
        assert process.returncode == 130 and "interrupted; nothing was written" in stderr
    else:
        name = signal.Signals(stop).name
        assert process.returncode == 128 + stop, stderr
        assert f"stopped ({name}); nothing was written" in stderr
    assert list(output.parent.iterdir()) == []
