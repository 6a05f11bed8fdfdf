"""Step counters follow from the design: what a step copies, creates and runs, exactly.

A real tiny BART export runs on the CPU provider; each assertion derives its number from the
batch's shapes (rows B, past P, encoder S, vocabulary V, layers L), never from a recorded run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.exporter import export_model
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.kv_tensors import NumpyOps, OrtValueOps
from service.runtime.model import LoadedModel
from service.runtime.step_counters import StepCounters
from tests.fixtures.tiny_text_models import build_bart

TEXTS = ["w1 w2 w3 w4", "w10 w11 w12 w13 w14 w15 w16 w17", "w5 w40"]
GREEDY = GenerationParams(max_new_tokens=12)
INT64 = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("counters")
    export_model(build_bart(root / "ckpt"), "summarization", root / "bart", progress=lambda *_: 0)
    return root / "bart"


@pytest.fixture
def served(model_dir) -> ServedModel:
    return ServedModel(LoadedModel.load(model_dir), EngineConfig())


def _queue(served: ServedModel, texts: list[str], params: GenerationParams) -> None:
    for text in texts:
        served.scheduler.add(served.prepare(text, None, params, lambda _: None))


def _fp32_bytes(served: ServedModel, rows: int, positions: int = 1) -> int:
    return rows * positions * served.manifest.dims.vocab_size * 4


def test_a_greedy_step_copies_each_rows_logits_and_creates_only_the_presents(served):
    _queue(served, TEXTS, GREEDY)
    served.step()
    batch = served.runner.batch
    assert batch is not None
    rows, past, source = batch.size, batch.past_length, batch.encoder_mask.shape[1]
    served.model.counters.take()

    served.step()
    counted = served.model.counters.take()
    layers = served.manifest.dims.num_layers
    assert counted.session_runs == 1
    assert counted.kv_allocations == 2 * layers, "the presents; nothing else is copied"
    assert counted.device_to_host_bytes == _fp32_bytes(served, rows)
    # input_ids, position_ids [B, 1], self mask [B, P + 1], encoder mask [B, S]: int64
    assert counted.host_to_device_bytes == rows * (1 + 1 + past + 1 + source) * INT64


def test_newcomers_step_runs_the_encoder_and_fetches_every_prompt_position(served):
    _queue(served, TEXTS, GREEDY)
    served.step()
    counted = served.model.counters.take()
    layers, prompt = served.manifest.dims.num_layers, served.runner.prompt.size
    assert counted.session_runs == 2, "one encoder run for all newcomers, one decoder run"
    assert counted.kv_allocations == 3 * 2 * layers, "cross K/V, empty past, presents"
    assert counted.device_to_host_bytes == _fp32_bytes(served, len(TEXTS), prompt)


def test_one_request_costs_one_encoder_run_and_one_decoder_run_per_token(served):
    counters: list[StepCounters] = []
    (result,) = run_to_completion(served, TEXTS[:1], [GREEDY], step_counters=counters)
    prompt = served.runner.prompt.size
    assert len(counters) == result.output_tokens
    assert sum(c.session_runs for c in counters) == 1 + result.output_tokens
    fetched = sum(c.device_to_host_bytes for c in counters)
    assert fetched == _fp32_bytes(served, 1, prompt + result.output_tokens - 1)


def test_beam_steps_reorder_host_rows_in_place(served):
    _queue(served, TEXTS[:1], GenerationParams(max_new_tokens=8, num_beams=3))
    served.step()
    served.model.counters.take()
    served.step()
    counted = served.model.counters.take()
    assert counted.kv_allocations == 2 * served.manifest.dims.num_layers, "presents only"


def test_counters_start_again_from_zero_when_taken():
    counters = StepCounters(host_to_device_bytes=3, session_runs=2, session_seconds=0.5)
    assert counters.take().session_runs == 2
    assert counters == StepCounters()
    assert StepCounters(session_seconds=0.25).host_seconds(1.0) == 0.75


def test_numpy_row_ops_count_the_buffers_they_create():
    counters = StepCounters()
    ops = NumpyOps(np.float32, counters)
    x = ops.zeros((4, 2, 5, 3))
    ops.copy_rows(x, np.array([0]), np.array([1]))
    kept = ops.compact_rows(x, np.array([0, 1, 3]))  # one row moves: in place
    assert counters.kv_allocations == 1
    ops.take_rows(kept, np.array([2, 0]))
    ops.slice_length(kept, 1, 4)
    assert counters.kv_allocations == 3
    assert (counters.session_runs, counters.device_to_host_bytes) == (0, 0)


def test_device_row_ops_count_runs_buffers_and_uploaded_indices():
    counters = StepCounters()
    ops = OrtValueOps(np.float32, "cpu", counters=counters)
    x = ort.OrtValue.ortvalue_from_numpy(np.ones((4, 2, 5, 3), np.float32))
    rows = np.array([3, 0, 1])
    ops.take_rows(x, rows)
    ops.copy_rows(x, np.array([0, 1]), np.array([2, 2]))
    assert (counters.session_runs, counters.kv_allocations) == (2, 2)
    assert counters.host_to_device_bytes == (rows.size + 2 + 2) * INT64
    ops.zeros((2, 2, 5, 3))
    assert counters.host_to_device_bytes == (rows.size + 4) * INT64 + 2 * 2 * 5 * 3 * 4, (
        "zeros are made on the host and uploaded"
    )
