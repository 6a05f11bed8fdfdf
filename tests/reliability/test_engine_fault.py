"""A runtime fault in one decode step fails only the requests of that batch, with the cause
logged, and the server keeps serving; a fault that one request's input causes fails that
request alone.

The fault is real: the summarizer's decoder graph is rebuilt with a Reshape of its logits to a
fixed [1, 1, V], so ONNX Runtime fails any step with more than one row, while a request alone
still runs.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from service.client import AttnserveClient
from service.engine.config import EngineConfig
from service.engine.sequence import StepEvent
from service.engine.served_model import ServedModel
from service.engine.sync_driver import generate_offline
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel
from tests.fixtures.inprocess_server import serving
from tests.integration.models import wait_until

TEXT = "a short text to summarize"


def _fail_on_batches(decoder_path: Path, vocab_size: int) -> None:
    """Rewrite `logits` as Reshape(logits, [1, 1, V]): valid for one row, an error for more."""
    model = onnx.load(str(decoder_path), load_external_data=True)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["logits_unchecked" if o == "logits" else o for o in node.output]
    shape = numpy_helper.from_array(np.array([1, 1, vocab_size], dtype=np.int64), "one_row")
    graph.initializer.append(shape)
    graph.node.append(helper.make_node("Reshape", ["logits_unchecked", "one_row"], ["logits"]))
    onnx.save(model, str(decoder_path))


@pytest.fixture(scope="module")
def faulty_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faulty-models")
    for model_dir in models_dir.iterdir():
        if (model_dir / "model.json").is_file():
            shutil.copytree(model_dir, root / model_dir.name)
    summarizer = next(d for d in root.iterdir() if "summar" in d.name)
    vocab = onnx.load(str(summarizer / "decoder.onnx"), load_external_data=False)
    vocab_size = vocab.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    _fail_on_batches(summarizer / "decoder.onnx", vocab_size)
    return root


def test_a_failing_step_fails_its_batch_only_and_the_server_goes_on(faulty_models, caplog):
    with serving(faulty_models, max_batch_rows=8) as server, AttnserveClient(server.target) as c:
        assert c.summarize(TEXT, max_new_tokens=4, timeout=60).output_tokens > 0  # alone: fine

        def summarize(_: int) -> grpc.StatusCode:
            try:
                c.summarize(TEXT, max_new_tokens=40, min_new_tokens=40, timeout=60)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        with caplog.at_level(logging.ERROR), ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(summarize, range(4)))
        assert grpc.StatusCode.INTERNAL in codes  # the rows batched together failed
        assert set(codes) <= {grpc.StatusCode.INTERNAL, grpc.StatusCode.OK}
        assert "decode step" in caplog.text and "Reshape" in caplog.text  # the cause is logged

        assert c.summarize(TEXT, max_new_tokens=4, timeout=60).output_tokens > 0  # still serving
        assert server.engine.running_rows() == 0


POISON = "poison"


@pytest.fixture(scope="module")
def poisonable_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The summarizer with one word added to its tokenizer beyond its embedding's rows (as a
    tokenizer extended without resizing the model): ONNX Runtime fails any encoder batch that
    holds it, a real fault that only one request carries."""
    root = tmp_path_factory.mktemp("poisonable-models")
    summarizer = next(d for d in models_dir.iterdir() if "summar" in d.name)
    target = root / summarizer.name
    shutil.copytree(summarizer, target)
    tokenizer = json.loads((target / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    manifest = json.loads((target / "model.json").read_text())
    vocab[POISON] = manifest["dims"]["vocab_size"] + 100
    (target / "tokenizer.json").write_text(json.dumps(tokenizer))
    return root


def test_a_tokenizer_larger_than_the_model_is_named_at_load(
    poisonable_models: Path, caplog: pytest.LogCaptureFixture
):
    """It still loads (only texts holding the extra tokens fail), but the log says why."""
    summarizer = next(poisonable_models.iterdir())
    with caplog.at_level(logging.WARNING):
        LoadedModel.load(summarizer)
    assert "its tokenizer has" in caplog.text and "tokenizer extended" in caplog.text


@pytest.mark.parametrize("beside", [False, True], ids=["inside-steps", "beside-steps"])
def test_a_poisoned_request_fails_alone_and_its_batch_mates_get_their_tokens(
    poisonable_models: Path, caplog, beside: bool
):
    """Inside the steps and beside them (--encoder-beside-decode), alike."""
    texts = [f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(1, 7)]
    # the first three run long enough (60 tokens, the demo decoder's positions allow 62) that
    # they are still decoding when the newcomers come; they may reach the server apart (a busy
    # host delays a client thread by more than 60 steps), so the newcomers wait for one only
    running_tokens, newcomer_tokens = 60, 12
    lengths = [running_tokens] * 3 + [newcomer_tokens] * 3
    overrides = {"max_batch_rows": 16, "encoder_beside_decode": beside}
    with serving(poisonable_models, **overrides) as server:
        with AttnserveClient(server.target) as client:

            def summarize(text: str, tokens: int = newcomer_tokens) -> list[int] | grpc.StatusCode:
                params = dict(max_new_tokens=tokens, min_new_tokens=tokens, timeout=60)
                try:
                    return list(client.summarize(text, **params).token_ids)
                except grpc.RpcError as error:
                    return error.code()

            alone = [summarize(text, tokens) for text, tokens in zip(texts, lengths, strict=True)]
            running = [*texts[:3]]
            newcomers = [*texts[3:], f"w1 {POISON} w2"]
            with caplog.at_level(logging.ERROR), ThreadPoolExecutor(8) as pool:
                first = [pool.submit(summarize, text, running_tokens) for text in running]
                wait_until(lambda: server.engine.running_rows() >= 1, what="a busy batch")
                later = list(pool.map(summarize, newcomers))  # admitted together, poison among
                results = [future.result() for future in first] + later
        assert results[-1] == grpc.StatusCode.INTERNAL
        assert results[:-1] == alone
        assert "failed on one request's input" in caplog.text
        assert server.engine.running_rows() == 0


def test_newcomers_admitted_with_a_poisoned_one_are_encoded_again_without_it(
    poisonable_models: Path,
):
    """The same, in one step for certain: every request is queued before the first step, so
    all are admitted (and encoded) together; the model's failure is narrowed to the one."""
    summarizer = next(poisonable_models.iterdir())
    params = GenerationParams(max_new_tokens=6, min_new_tokens=6)
    texts = ["w1 w2 w3", f"w4 {POISON} w5", "w6 w7 w8 w9"]
    served = ServedModel(LoadedModel.load(summarizer), EngineConfig(max_queue=8))
    events: list[list[StepEvent]] = [[] for _ in texts]
    groups = [served.prepare(text, None, params, events[i].append) for i, text in enumerate(texts)]
    for group in groups:
        served.scheduler.add(group)
    first = served.plan(0.0)
    assert first.admit == groups
    output = served.execute(first)
    assert output is not None and [group for group, _ in output.failed] == [groups[1]]
    for group, event in served.update(first, output):
        group.emit(event)
    while served.scheduler.has_work():
        for group, event in served.step():
            group.emit(event)
    assert isinstance(events[1][-1].error, RuntimeError)
    for index in (0, 2):
        (alone,) = generate_offline(summarizer, [texts[index]], params)
        assert groups[index].generated == alone.token_ids
