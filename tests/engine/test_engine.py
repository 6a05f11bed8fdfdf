"""The async Engine on a tiny exported BART: streaming, errors, queue limits, cancel and drain."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from export.exporter import export_model
from service.engine.config import EngineConfig
from service.engine.engine import Engine
from service.engine.served_model import ServedModel
from service.engine.types import GenerationParams, GenerationRequest, GenerationResult, TokenDelta
from service.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from service.metrics import ServerMetrics
from service.runtime.model import LoadedModel
from tests.fixtures.tiny_text_models import build_bart
from tests.metrics.exposition import value

pytestmark = pytest.mark.timeout(120)

TEXT = "w1 w2 w3 w4 w5 w6"
LONG = GenerationParams(max_new_tokens=40, min_new_tokens=40)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    checkpoint = build_bart(root / "checkpoint")
    model_dir = root / "models" / "tiny-bart"
    export_model(checkpoint, "summarization", model_dir, progress=lambda *_: None)
    return root / "models"


def _request(params: GenerationParams = LONG, **fields) -> GenerationRequest:
    return GenerationRequest(
        **{"model": "", "task": "summarization", "text": TEXT, "params": params, **fields}
    )


async def _collect(engine: Engine, request: GenerationRequest) -> list:
    return [item async for item in engine.generate(request)]


def _run(models_dir: Path, scenario, metrics: ServerMetrics | None = None, **config):
    """Load an engine, run `scenario(engine)` on a fresh event loop, always stop the engine."""
    engine = Engine.load(models_dir, EngineConfig(**config), metrics)

    async def main():
        try:
            return await scenario(engine)
        finally:
            await engine.stop(drain=False)

    return asyncio.run(main())


def test_streamed_deltas_add_up_to_the_result(models_dir):
    async def scenario(engine):
        await engine.start()
        return await _collect(engine, _request())

    items = _run(models_dir, scenario)
    deltas, result = items[:-1], items[-1]
    assert isinstance(result, GenerationResult) and all(isinstance(d, TokenDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == result.text
    assert [t for d in deltas for t in d.token_ids] == result.token_ids
    assert len(deltas) >= result.output_tokens == 40, "one delta per token, as produced"
    assert result.model == "tiny-bart"
    assert result.finish_reason == "eos", "the checkpoint forces EOS as the last token"


def test_beam_search_answer_arrives_as_one_delta(models_dir):
    async def scenario(engine):
        await engine.start()
        return await _collect(engine, _request(GenerationParams(num_beams=3, max_new_tokens=8)))

    delta, result = _run(models_dir, scenario)
    assert delta.text == result.text and delta.token_ids == result.token_ids


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"model": "nope"}, NotFound, "'summarization' \\(summarization models: tiny-bart\\)"),
        ({"task": "captioning", "model": "tiny-bart"}, NotFound, "serves summarization"),
        ({"version": "7"}, NotFound, "no version '7'"),
        ({"text": "  "}, InvalidArgument, "text is empty"),
        ({"params": GenerationParams(top_p=2.0)}, InvalidArgument, "top_p"),
        ({"deadline": 0.0}, DeadlineExceeded, "deadline passed before it started"),
    ],
)
def test_bad_requests_fail_before_anything_is_queued(models_dir, fields, error, message):
    async def scenario(engine):
        with pytest.raises(error, match=message):
            await _collect(engine, _request(**fields))
        return engine.queue_length()

    assert _run(models_dir, scenario) == 0


def test_full_queue_is_refused_at_once_and_counted(models_dir):
    async def scenario(engine):  # the worker is not started: the first request stays queued
        first = asyncio.ensure_future(_collect(engine, _request()))
        for _ in range(1000):  # until it is prepared (in the prep pool) and queued
            if engine.queue_length() == 1:
                break
            await asyncio.sleep(0.01)
        assert engine.queue_length() == 1
        with pytest.raises(ResourceExhausted, match="queue is full"):
            await _collect(engine, _request())
        first.cancel()

    metrics = ServerMetrics()
    _run(models_dir, scenario, metrics, max_queue=1)
    assert _rejections(metrics, "resource_exhausted") == 1


def test_a_request_expiring_while_queued_is_counted_as_refused(models_dir):
    async def scenario(engine):  # queued while the worker is not started; it expires there
        queued = asyncio.ensure_future(_collect(engine, _request(deadline=time.monotonic() + 0.1)))
        await asyncio.sleep(0.2)
        await engine.start()
        with pytest.raises(DeadlineExceeded, match="before it started"):
            await queued

    metrics = ServerMetrics()
    _run(models_dir, scenario, metrics)
    assert _rejections(metrics, "deadline_exceeded") == 1


def test_each_steps_runtime_costs_reach_the_metrics(models_dir):
    async def scenario(engine):
        await engine.start()
        return await _collect(engine, _request())

    metrics = ServerMetrics()
    result = _run(models_dir, scenario, metrics)[-1]
    exposition = generate_latest(metrics.registry).decode()
    steps = result.output_tokens  # one step per token; the first also runs the encoder
    assert value(exposition, "attnserve_decode_step_host_seconds_count") == steps
    assert value(exposition, "attnserve_session_runs_total") == 1 + steps
    assert value(exposition, "attnserve_step_device_to_host_bytes_total") > 0


def _rejections(metrics: ServerMetrics, reason: str) -> float | None:
    exposition = generate_latest(metrics.registry).decode()
    return value(exposition, "attnserve_rejected_requests_total", reason=reason)


def test_drain_finishes_queued_work_and_refuses_new_requests(models_dir):
    async def scenario(engine):
        queued = asyncio.ensure_future(_collect(engine, _request()))
        await asyncio.sleep(0.05)
        await engine.start()
        await engine.stop(drain=True)
        assert engine.draining
        with pytest.raises(Unavailable, match="draining"):
            await _collect(engine, _request())
        return await queued

    assert isinstance(_run(models_dir, scenario)[-1], GenerationResult)


def test_stop_without_drain_fails_queued_requests_as_unavailable(models_dir):
    async def scenario(engine):
        queued = asyncio.ensure_future(_collect(engine, _request()))
        await asyncio.sleep(0.05)
        await engine.stop(drain=False)
        with pytest.raises(Unavailable, match="shutting down"):
            await queued

    _run(models_dir, scenario)


def test_consumer_that_stops_iterating_frees_its_rows(models_dir):
    async def scenario(engine):
        await engine.start()
        stream = engine.generate(_request(GenerationParams(max_new_tokens=60, min_new_tokens=60)))
        await stream.__anext__()
        await stream.aclose()
        deadline = time.monotonic() + 5
        while engine.running_rows() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return engine.running_rows(), await _collect(engine, _request())

    rows, items = _run(models_dir, scenario)
    assert rows == 0 and isinstance(items[-1], GenerationResult)


def test_models_lists_each_model_with_its_default(models_dir):
    engine = Engine.load(models_dir, EngineConfig())
    (info,) = engine.models()
    assert (info.name, info.task, info.is_default) == ("tiny-bart", "summarization", True)
    assert info.provider == "CPUExecutionProvider"
    assert engine.resolve("", "summarization") == info


@pytest.fixture
def served(models_dir) -> ServedModel:
    return ServedModel(LoadedModel.load(models_dir / "tiny-bart"), EngineConfig())


def _start_running(served: ServedModel, deadline: float | None = None):
    events = []
    group = served.prepare(TEXT, None, LONG, events.append, deadline=deadline)
    served.scheduler.add(group)
    served.step(now=0.0)
    assert served.runner.rows == 1
    return group


def test_running_request_past_its_deadline_stops_at_the_next_step(served):
    group = _start_running(served, deadline=10.0)
    ((leaving, event),) = served.step(now=11.0)
    assert leaving is group and isinstance(event.error, DeadlineExceeded)
    assert served.runner.rows == 0 and not served.scheduler.has_work()


def test_cancelled_request_frees_its_rows_at_the_next_step(served):
    group = _start_running(served)
    group.cancelled = True
    ((leaving, event),) = served.step(now=1.0)
    assert leaving is group and isinstance(event.error, Cancelled)
    assert served.runner.rows == 0 and served.runner.kv_bytes() == 0


@pytest.fixture(scope="module")
def narrow_models_dir(tmp_path_factory) -> Path:
    """tiny-bart whose generation config bans every word (bad_words_ids), leaving the four
    special tokens: a request that also bans what it already said runs out of tokens at once."""
    root = tmp_path_factory.mktemp("narrow")
    words = {"bad_words_ids": [[token] for token in range(4, 64)]}
    checkpoint = build_bart(root / "checkpoint", generation=words)
    export_model(checkpoint, "summarization", root / "models" / "tiny-bart", progress=print)
    return root / "models"


@pytest.mark.parametrize("choice", [{"do_sample": True, "seed": 1}, {"num_beams": 2}])
def test_request_left_without_tokens_fails_alone(narrow_models_dir, choice):
    """no_repeat_ngram_size=1 with min_new_tokens bans every token by the fourth (generate()
    raises there when sampling, and returns arbitrary tokens with beams): that request alone
    gets InvalidArgument, the requests decoding in the same steps finish, and the engine
    serves on. Greedy takes the first token there, as generate() does."""
    stuck = GenerationParams(no_repeat_ngram_size=1, min_new_tokens=10, max_new_tokens=10, **choice)
    mates = [GenerationParams(max_new_tokens=10), GenerationParams(num_beams=2, max_new_tokens=10)]

    async def scenario(engine):
        await engine.start()
        calls = [_collect(engine, _request(params)) for params in [*mates, stuck, *mates]]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        return outcomes, await _collect(engine, _request(mates[0]))

    outcomes, after = _run(narrow_models_dir, scenario)
    error = outcomes[2]
    assert isinstance(error, InvalidArgument), error
    assert "no token is left to choose at generated token 4" in str(error)
    for items in outcomes[:2] + outcomes[3:]:
        assert isinstance(items[-1], GenerationResult), items
    assert isinstance(after[-1], GenerationResult)
