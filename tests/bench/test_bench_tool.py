"""`attnserve bench load` against a real server (its own process, as the suite runs it) on a
tiny BART: the JSON output is complete and its counts agree with each other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bench.models import exported_model
from bench.server import RunningServer, attnserve_server
from bench.workload import WORKLOADS
from service.cli import main
from service.runtime.manifest import ModelManifest

MODEL = "bart-tiny"
RESULT_FIELDS = {
    "mode", "level", "arrival_interval_s", "window_s", "requests", "completed", "errors",
    "throughput_rps", "tokens_per_s", "latency_ms", "ttft_ms", "inter_token_ms",
    "mean_input_tokens", "mean_output_tokens", "output_tokens", "mean_decode_batch",
}  # fmt: skip
PERCENTILE_FIELDS = {"p50", "p90", "p95", "p99", "max", "mean"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_model(tmp_path_factory.mktemp("bench"), MODEL, progress=lambda message: None)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    log = model_dir.parents[2] / "server.log"  # beside served/, not among the models
    with attnserve_server(model_dir.parent, log) as running:
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
        assert set(result["inter_token_ms"]) == PERCENTILE_FIELDS
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


def test_staggered_arrivals_report_the_gaps_between_each_streams_tokens(server, tmp_path):
    interval, requests = 0.2, 6
    report = _bench(
        server, tmp_path, "--workload", "Q1", "--levels", "4", "--requests", str(requests),
        "--arrival-interval", str(interval), "--warmup", "0",
    )  # fmt: skip
    (result,) = report["results"]
    assert result["arrival_interval_s"] == interval
    assert result["requests"] == result["completed"] == requests
    assert result["window_s"] >= (requests - 1) * interval, "the last one left 1 s after the first"
    gap, latency, ttft = result["inter_token_ms"], result["latency_ms"], result["ttft_ms"]
    assert 0 < gap["p50"] <= gap["p90"] <= gap["p99"] <= gap["max"] <= latency["max"]
    assert ttft["p95"] <= ttft["max"]
    row = (tmp_path / "load.md").read_text().splitlines()[-1]
    assert f"4 in flight, 1 per {interval:g} s" in row


def test_an_unserved_model_is_refused_before_any_load(server, tmp_path, capsys):
    argv = ["bench", "load", "--target", server.target, "--workload", "Q1", "--model", "nope"]
    assert main([*argv, "--requests", "1", "--out", str(tmp_path)]) == 2
    assert "serves no summarization model 'nope'" in capsys.readouterr().err


def test_overhead_splits_each_pair_with_the_servers_metrics(server, model_dir, tmp_path):
    argv = ["bench", "overhead", "--target", server.target, "--model-dir", str(model_dir)]
    flags = ["--workload", "Q1", "--pairs", "2", "--metrics-url", server.metrics_url]
    assert main([*argv, *flags, "--out", str(tmp_path)]) == 0
    overhead = json.loads((tmp_path / "overhead.json").read_text())["overhead"]
    assert overhead["pairs"] == 2
    assert None not in overhead.values(), "every field, the split included, was measured"
    assert overhead["grpc_p50_ms"] > overhead["transport_p50_ms"] > 0


def test_profile_splits_a_request_into_onnx_runtime_runs_and_python(model_dir, tmp_path):
    argv = ["bench", "profile", "--model-dir", str(model_dir), "--workload", "Q1"]
    assert main([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    profile = json.loads((tmp_path / "profile.json").read_text())["profile"]
    forced = WORKLOADS["Q1"].output_tokens.low
    assert profile["decoder_runs"] == forced, "one decoder call per generated token"
    parts = profile["encoder_ms"] + profile["decoder_ms"] + profile["python_ms"]
    assert parts == pytest.approx(profile["total_ms"], rel=0.2), "medians of parts ~ the total"
    assert min(profile["encoder_ms"], profile["decoder_ms"], profile["python_ms"]) > 0
    assert "MatMul" in profile["decoder_ops_ms"]
    steps = profile["steps"]
    assert steps["steps"] == forced and steps["first_step"]["session_runs"] == 2
    step = steps["decode_step_median"]
    assert step["session_runs"] == 1, "no row moves for one greedy request"
    assert step["device_to_host_bytes"] == 4 * ModelManifest.load(model_dir).dims.vocab_size, (
        "one row's float32 logits"
    )
