"""`attnserve serve`: refuses to start, with a clear log line, when it cannot serve; once
serving, one /metrics shows both its models and its RPCs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from service.cli import main
from service.client import AttnserveClient
from tests.integration.models import SHORT_REQUEST, SUMMARIZER, TEXT
from tests.integration.serve_process import ServeProcess
from tests.metrics.exposition import scrape, value

LOCAL = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]


def test_bad_settings_exit_2_naming_the_setting(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert main(["serve", "--models", str(tmp_path), *LOCAL, "--max-queue", "0"]) == 2
    assert "max_queue must be > 0" in caplog.text


def test_a_models_directory_without_models_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    assert main(["serve", "--models", str(tmp_path), *LOCAL]) == 1
    assert f"cannot load the models in {tmp_path}" in caplog.text
    assert "no model directories" in caplog.text


def test_a_taken_metrics_port_exits_1_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", str(port)]
        assert main(["serve", "--models", str(tmp_path), *args]) == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text


@pytest.mark.parametrize("flag", ["--port", "--http-port"])
def test_a_taken_grpc_or_http_port_exits_1_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, flag: str
):
    """A taken gRPC port ended in a 46-line traceback (grpc's RuntimeError)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {"--port": "0", "--http-port": "0", flag: str(port)}
        args = ["--host", "127.0.0.1", "--metrics-port", "0"]
        args += [item for pair in ports.items() for item in pair]
        assert main(["serve", "--models", str(tmp_path), *args]) == 1
    kind = "gRPC" if flag == "--port" else "HTTP"
    assert f"cannot listen on the {kind} port 127.0.0.1:{port}" in caplog.text
    assert "Traceback" not in caplog.text


def test_metrics_show_the_loaded_models_and_the_rpcs_served(serve_process: ServeProcess):
    with AttnserveClient(serve_process.target) as client:
        models = client.list_models()
        reply = client.summarize(TEXT, model=SUMMARIZER, **SHORT_REQUEST)
    exposition = scrape(serve_process.metrics_port)

    for model in models:
        labels = {"model": model.name, "version": model.version}
        assert value(exposition, "attnserve_model_info", **labels) == 1, model.name
    served = {"model": SUMMARIZER, "version": reply.model_version}
    assert value(exposition, "attnserve_requests_total", method="Summarize", **served) == 1
    assert value(exposition, "attnserve_generated_tokens_total", **served) == reply.output_tokens


def test_the_start_up_heap_is_frozen_before_it_serves(serve_process: ServeProcess):
    """Full collections would traverse every start-up object again and again, holding the GIL
    (service.runtime.heap): the process freezes them once loaded."""
    frozen = [line for line in serve_process.start_log if "start-up objects frozen" in line]
    assert len(frozen) == 1, serve_process.start_log
    count = int(frozen[0].split("start-up objects frozen")[0].split()[-1])
    assert count > 10_000  # modules, gRPC, the models: far more than a handful
    with AttnserveClient(serve_process.target) as client:
        assert client.summarize(TEXT, model=SUMMARIZER, **SHORT_REQUEST).text
