"""`attnserve bench load` against a real server (its own process, as the suite runs it) on a
tiny BART: the JSON output is complete and its counts agree with each other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.bench.models import exported_model
from service.bench.server import RunningServer, attnserve_server
from service.bench.workload import WORKLOADS
from service.cli import main

MODEL = "bart-tiny"
RESULT_FIELDS = {
    "mode", "level", "window_s", "requests", "completed", "errors", "throughput_rps",
    "tokens_per_s", "latency_ms", "ttft_ms", "mean_input_tokens", "mean_output_tokens",
    "output_tokens", "mean_decode_batch",
}  # fmt: skip
PERCENTILE_FIELDS = {"p50", "p95", "p99", "mean"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    out = tmp_path_factory.mktemp("bench")
    model_dir = exported_model(out, MODEL, progress=lambda message: None)
    with attnserve_server(model_dir.parent, out / "server.log") as running:
        yield running


def _bench(server: RunningServer, out: Path, *flags: str) -> dict:
    argv = ["bench", "load", "--target", server.target, "--metrics-url", server.metrics_url]
    assert main([*argv, "--out", str(out), *flags]) == 0
    return json.loads((out / "load.json").read_text())


def test_closed_loop_bench_reports_every_field_with_consistent_counts(server, tmp_path):
    report = _bench(
        server, tmp_path, "--workload", "Q3", "--levels", "1,3", "--duration", "1.5",
        "--warmup", "0.5",
    )  # fmt: skip
    assert report["workload"]["name"] == "Q3" and report["machine"]["cores"] >= 1
    assert [r["level"] for r in report["results"]] == [1, 3]
    outputs = WORKLOADS["Q3"].output_tokens
    for result in report["results"]:
        assert set(result) == RESULT_FIELDS
        assert set(result["latency_ms"]) == set(result["ttft_ms"]) == PERCENTILE_FIELDS
        assert result["errors"] == {} and result["completed"] == result["requests"] > 0
        assert result["output_tokens"] == pytest.approx(
            result["mean_output_tokens"] * result["completed"]
        )
        assert outputs.low <= result["mean_output_tokens"] <= outputs.high
        latency, ttft = result["latency_ms"], result["ttft_ms"]
        assert 0 < ttft["p50"] <= latency["p50"] <= latency["p95"] <= latency["p99"]
        assert result["throughput_rps"] > 0 and result["tokens_per_s"] > 0
        assert result["mean_decode_batch"] >= 1.0, "scraped from the server's /metrics"
    assert report["results"][1]["mean_decode_batch"] > 1.0, "3 clients share decode steps"
    assert (tmp_path / "load.md").read_text().count("\n") == 2 + len(report["results"])
    assert Image.open(tmp_path / "load.png").size[0] > 0


def test_open_loop_measures_the_requested_count_with_forced_output_length(server, tmp_path):
    spec = {
        "name": "tiny-fixed",
        "task": "summarization",
        "model": MODEL,
        "output_tokens": {"kind": "constant", "low": 5, "high": 5},
        "input_words": {"kind": "uniform", "low": 3, "high": 20},
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    report = _bench(
        server, tmp_path, "--workload", str(spec_file), "--mode", "open", "--levels", "20",
        "--requests", "12", "--warmup", "0.2",
    )  # fmt: skip
    (result,) = report["results"]
    assert result["mode"] == "open" and result["requests"] == result["completed"] == 12
    assert result["output_tokens"] == 12 * 5, "min_new_tokens = max_new_tokens forces the length"


def test_an_unserved_model_is_refused_before_any_load(server, tmp_path, capsys):
    argv = ["bench", "load", "--target", server.target, "--workload", "Q1", "--model", "nope"]
    assert main([*argv, "--requests", "1", "--out", str(tmp_path)]) == 2
    assert "serves no summarization model 'nope'" in capsys.readouterr().err
