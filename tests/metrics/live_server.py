"""A real attnserve server (engine, gRPC, /metrics) on 127.0.0.1 port 0, after known traffic.

The server runs on its own event loop in a thread so that blocking gRPC stubs can call it from
the test thread; what was sent and answered is kept, so tests can compare the scrape with it.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.metrics.exposition import scrape, total

MODELS_ENV = "ATTNSERVE_TEST_MODELS"
TIMEOUT_S = 120


@dataclass
class Traffic:
    """What the tests sent, and what the server answered."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code) -> RPCs
    model: str = ""  # the default model the requests went to, and its version
    version: str = ""
    unary_method: str = ""  # "Summarize" or "Caption"
    stream_method: str = ""
    generations: int = 0  # requests that ran to an answer
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class LiveServer:
    metrics_port: int
    kv_budget_bytes: int
    models: list[pb.ModelInfo]
    traffic: Traffic


def models_dir() -> Path:
    value = os.environ.get(MODELS_ENV, "")
    if not value:
        pytest.skip(f"{MODELS_ENV} is not set: build the demo models (`make models`) and set it")
    return Path(value)


def _inputs(task: str, count: int) -> list[str] | list[bytes]:
    """Demo-task inputs: match reports to summarize, or PNG images of shapes to caption."""
    from export.demo.tasks import make_match_report, render_shapes

    rngs = [np.random.default_rng(seed) for seed in range(count)]
    if task == "summarization":
        return [make_match_report(rng)[0] for rng in rngs]
    images = []
    for rng in rngs:
        buffer = io.BytesIO()
        render_shapes(rng)[0].save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def _request(task: str, model_input: str | bytes, **fields: Any) -> Any:
    if task == "summarization":
        return pb.SummarizeRequest(text=model_input, **fields)
    return pb.CaptionRequest(image=model_input, **fields)


def send_traffic(target: str) -> tuple[list[pb.ModelInfo], Traffic]:
    """Unary and streamed requests to a default model (summarization if served), a model
    listing, and three kinds of failure."""
    traffic = Traffic()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        models = list(stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT_S).models)
        traffic.sent["ListModels", "OK"] += 1
        defaults = {m.task: m for m in models if m.is_default}
        model = defaults.get("summarization") or defaults["captioning"]
        traffic.model, traffic.version, task = model.name, model.version, model.task
        unary = "Summarize" if task == "summarization" else "Caption"
        stream = f"{unary}Stream"
        traffic.unary_method, traffic.stream_method = unary, stream
        call, call_stream = getattr(stub, unary), getattr(stub, stream)

        def answered(input_tokens: int, output_tokens: int) -> None:
            traffic.generations += 1
            traffic.input_tokens += input_tokens
            traffic.output_tokens += output_tokens

        inputs = _inputs(task, 5)
        for model_input in inputs[:3]:
            reply = call(_request(task, model_input), timeout=TIMEOUT_S)
            answered(reply.input_tokens, reply.output_tokens)
            traffic.sent[unary, "OK"] += 1
        for model_input in inputs[3:]:
            chunks = list(call_stream(_request(task, model_input), timeout=TIMEOUT_S))
            answered(chunks[-1].input_tokens, chunks[-1].output_tokens)
            traffic.sent[stream, "OK"] += 1

        failures = [
            _request(task, type(inputs[0])()),  # empty text or image
            _request(task, inputs[0], model="no-such-model"),
            _request(task, inputs[0], params=pb.GenerationParams(num_beams=10_000)),
        ]
        for request in failures:
            with pytest.raises(grpc.RpcError) as failure:
                call(request, timeout=TIMEOUT_S)
            traffic.sent[unary, failure.value.code().name] += 1
    return models, traffic


def _wait_until_counted(metrics_port: int, rpcs: int, timeout_s: float = 5.0) -> None:
    """grpc.aio sends an aborted RPC's status before the abort unwinds through the interceptor,
    so the client can see the error a moment before it is counted."""
    deadline = time.monotonic() + timeout_s
    while total(scrape(metrics_port), "attnserve_requests_total") < rpcs:
        if time.monotonic() > deadline:
            return  # the tests then show which count is missing
        time.sleep(0.05)


@contextmanager
def live_server_after_traffic() -> Iterator[LiveServer]:
    from service.api.server import create_server
    from service.config import ServerSettings
    from service.engine.engine import Engine
    from service.metrics import ServerMetrics, start_metrics_server

    directory = models_dir()
    settings = ServerSettings(models=directory, host="127.0.0.1", port=0, drain_seconds=5.0)
    metrics = ServerMetrics()
    metrics_server, metrics_port = start_metrics_server(metrics, "127.0.0.1", 0)
    engine = Engine.load(directory, settings.engine, metrics)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="attnserve-metrics-test", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=TIMEOUT_S)

    server, port = run(create_server(settings, engine, "127.0.0.1:0", metrics))
    try:
        models, traffic = send_traffic(f"127.0.0.1:{port}")
        _wait_until_counted(metrics_port, sum(traffic.sent.values()))
        yield LiveServer(metrics_port, settings.engine.kv_budget_bytes, models, traffic)
    finally:
        run(server.drain_and_stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        metrics_server.shutdown()
        metrics_server.server_close()
