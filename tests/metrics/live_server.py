"""A real attnserve server (engine, gRPC, /metrics) on 127.0.0.1 port 0, after known traffic.

The server is the shared in-process one (tests/fixtures/inprocess_server.py), with its metrics
served on a free port; what was sent and answered is kept, so tests can compare the scrape
with it.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.api.metrics_http import start_metrics_server
from tests.fixtures.inprocess_server import serving
from tests.fixtures.models_env import demo_models_dir
from tests.metrics.exposition import scrape, total

TIMEOUT_S = 120


@dataclass
class Traffic:
    """What the tests sent, and what the server answered."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code) -> RPCs
    refused: Counter[str] = field(default_factory=Counter)  # the engine's refusals, by reason
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

        failures = [  # (request, whether a served model's engine refuses it)
            (_request(task, type(inputs[0])()), True),  # empty text or image
            (_request(task, inputs[0], params=pb.GenerationParams(num_beams=10_000)), True),
            (_request(task, inputs[0], model="no-such-model"), False),
        ]
        for request, refused in failures:
            with pytest.raises(grpc.RpcError) as failure:
                call(request, timeout=TIMEOUT_S)
            code = failure.value.code().name
            traffic.sent[unary, code] += 1
            if refused:
                traffic.refused[code.lower()] += 1
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
    with serving(demo_models_dir()) as server:
        metrics_server, metrics_port = start_metrics_server(server.metrics, "127.0.0.1", 0)
        try:
            models, traffic = send_traffic(server.target)
            _wait_until_counted(metrics_port, sum(traffic.sent.values()))
            yield LiveServer(metrics_port, server.settings.engine.kv_budget_bytes, models, traffic)
        finally:
            metrics_server.shutdown()
            metrics_server.server_close()
