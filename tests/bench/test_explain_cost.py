"""`attnserve bench explain` on a tiny BART: the three variants are timed and reported, and the
baseline model really lacks the output (it could not answer an explain request)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from bench.explain_cost import VARIANTS, strip_attention_output
from bench.models import exported_model
from service.cli import main
from service.runtime.manifest import ModelManifest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain-bench")
    return exported_model(out, "bart-tiny", progress=lambda message: None)


def test_bench_explain_reports_every_variant_per_concurrency(model_dir: Path, tmp_path: Path):
    argv = ["bench", "explain", "--model-dir", str(model_dir), "--workload", "Q1"]
    assert main([*argv, "--concurrent", "1,2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "explain.json").read_text())
    assert [r["concurrent"] for r in report["results"]] == [1, 2]
    for result in report["results"]:
        assert set(result["median_s"]) == set(VARIANTS)
        assert all(seconds > 0 for seconds in result["median_s"].values())
        assert result["off_vs_without"] > 0 and result["on_vs_without"] > 0
    assert "| 2 |" in (tmp_path / "explain.md").read_text()


def test_stripped_copy_has_no_attention_output(model_dir: Path, tmp_path: Path):
    stripped = strip_attention_output(model_dir, tmp_path / "stripped")
    manifest = ModelManifest.load(stripped)
    assert manifest.cross_attention is None
    graph = onnx.load(str(stripped / manifest.decoder.file)).graph
    assert [o.name for o in graph.output] == manifest.decoder.outputs
    assert "cross_attention" not in manifest.decoder.outputs
