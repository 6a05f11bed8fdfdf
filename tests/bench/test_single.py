"""`attnserve bench single` on a tiny BART: every variant is timed and the engine's tokens equal
generate()'s (the comparison is of the same work)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.models import checkpoint_dir, exported_model
from bench.single import GENERATE
from service.cli import main

MODEL = "bart-tiny"


def test_bench_single_times_every_variant_on_the_same_tokens(tmp_path: Path):
    model_dir = exported_model(tmp_path / "models", MODEL, progress=lambda message: None)
    checkpoint = checkpoint_dir(tmp_path / "models", MODEL)
    argv = ["bench", "single", "--checkpoint", str(checkpoint), "--workload", "Q1"]
    argv += ["--model-dir", f"fp32={model_dir}", "--repeats", "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "single.json").read_text())["result"]
    assert set(result["median_s"]) == {GENERATE, "fp32"}
    assert all(seconds > 0 for seconds in result["median_s"].values())
    assert result["vs_generate"][GENERATE] == 1.0
    assert result["token_agreement"]["fp32"] == 1.0
    assert "| fp32 |" in (tmp_path / "out" / "single.md").read_text()


def test_bench_single_rejects_a_model_dir_without_a_name(tmp_path: Path, capsys):
    argv = ["bench", "single", "--checkpoint", str(tmp_path), "--model-dir", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
