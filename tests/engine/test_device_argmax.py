"""Greedy token choice next to the logits gives the host path's tokens and moves only ids.

The argmax graph runs here on ONNX Runtime's CPU provider (on CUDA it is the same graph on the
device's copy of the logits); the engine tests serve a real tiny BART export with the device
path forced on and compare with the numpy path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.exporter import export_model
from service.engine.config import EngineConfig
from service.engine.decoding import RowParams, every_row_bans, process_logits
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel
from service.runtime.step_counters import StepCounters
from service.runtime.token_choice import DeviceArgmax
from tests.engine.params import resolved_params
from tests.fixtures.tiny_text_models import build_bart

TEXTS = ["w1 w2 w3 w4", "w10 w11 w12 w13 w14 w15 w16 w17", "w5 w40", "w30 w31 w32", "w7 w8"]
MIXED = [
    GenerationParams(max_new_tokens=15),
    GenerationParams(max_new_tokens=15, num_beams=3, no_repeat_ngram_size=2, min_new_tokens=4),
    GenerationParams(max_new_tokens=12, do_sample=True, top_k=8, seed=1),
    GenerationParams(max_new_tokens=14, repetition_penalty=1.3, min_new_tokens=6),
    GenerationParams(max_new_tokens=9, min_new_tokens=9),  # as the benchmarks force lengths
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("argmax")
    export_model(build_bart(root / "ckpt"), "summarization", root / "bart", progress=lambda *_: 0)
    return root / "bart"


def _served(model_dir: Path, device_argmax: str) -> ServedModel:
    config = EngineConfig(max_batch_rows=6, device_argmax=device_argmax)  # the last joins late
    return ServedModel(LoadedModel.load(model_dir), config)


@pytest.mark.parametrize("logits_type", ["tensor(float)", "tensor(float16)"])
def test_graph_argmax_is_numpys_over_random_logits_with_ties_and_bans(logits_type):
    dtype = np.float16 if logits_type == "tensor(float16)" else np.float32
    argmax = DeviceArgmax(logits_type, "cpu", 0, StepCounters())
    rng = np.random.default_rng(0)
    for trial in range(50):
        rows, positions, vocab = rng.integers(1, 9), rng.integers(1, 4), rng.integers(2, 300)
        logits = rng.normal(size=(rows, positions, vocab)).astype(dtype)
        if trial % 2:  # equal maxima: the first one wins, as in numpy
            logits = np.round(logits).astype(dtype)
        host_rows = np.flatnonzero(rng.random(rows) < 0.5)
        banned = np.stack([rng.integers(0, rows, 5), rng.integers(0, vocab, 5)], axis=1)
        if trial % 3 == 0:  # each row's best token banned: the runner-up wins
            banned = np.stack([np.arange(rows), np.argmax(logits[:, -1], axis=1)], axis=1)
        tokens, host_logits = argmax.run(logits, host_rows, banned)
        allowed = logits[:, -1].astype(np.float32)
        allowed[banned[:, 0], banned[:, 1]] = -np.inf
        np.testing.assert_array_equal(tokens, np.argmax(allowed, axis=1))
        np.testing.assert_array_equal(host_logits, logits[host_rows, -1].astype(np.float32))


def test_rows_left_to_the_device_are_rows_process_logits_only_bans_eos_in():
    variants = [
        {},
        {"num_beams": 2},
        {"do_sample": True},
        {"repetition_penalty": 1.2},
        {"no_repeat_ngram_size": 2},
        {"min_length": 4},
        {"forced_bos_token_id": 5},
        {"forced_eos_token_id": 6},
    ]
    params = RowParams.concat([RowParams.for_request(resolved_params(**v), 1) for v in variants])
    rng = np.random.default_rng(1)
    eos = np.array([2])
    rows = len(variants)
    for length in range(1, 21):  # max_length 20: forced EOS at 19
        lengths = np.full(rows, length)
        sequences = rng.integers(0, 20, size=(rows, 24))
        logits = rng.normal(size=(rows, 20)).astype(np.float32)
        scores = process_logits(logits, sequences, lengths, params, eos)
        banned = params.min_length_bans(lengths, eos)
        logits[banned[:, 0], banned[:, 1]] = -np.inf
        as_on_device = np.all(scores == logits, axis=1)
        on_device = ~params.needs_host_logits(lengths)
        assert np.all(as_on_device[on_device]), f"a processor acted on a device row at {length}"


def test_the_models_bad_words_are_banned_on_device_rows_too():
    """Marian bans <pad> on every row: the device's argmax gets those bans with the EOS ones."""
    params = RowParams.concat(
        [RowParams.for_request(resolved_params(**v), 1) for v in ({}, {"min_length": 4})]
    )
    rng = np.random.default_rng(2)
    eos, bad_words = np.array([2]), np.array([3, 7])
    for length in (1, 5):
        lengths = np.full(2, length)
        sequences = rng.integers(0, 20, size=(2, 8))
        logits = rng.normal(size=(2, 20)).astype(np.float32)
        logits[:, bad_words] += 10.0  # they would win
        scores = process_logits(logits, sequences, lengths, params, eos, bad_words)
        bans = np.concatenate([params.min_length_bans(lengths, eos), every_row_bans(2, bad_words)])
        logits[bans[:, 0], bans[:, 1]] = -np.inf
        assert np.array_equal(scores.argmax(axis=1), logits.argmax(axis=1))
        assert not np.isin(logits.argmax(axis=1), bad_words).any()


def test_served_tokens_are_unchanged_with_the_argmax_on_the_device(model_dir):
    host = run_to_completion(_served(model_dir, "off"), TEXTS, MIXED)
    device = run_to_completion(_served(model_dir, "on"), TEXTS, MIXED)
    assert [r.token_ids for r in device] == [r.token_ids for r in host]


def test_a_greedy_step_moves_token_ids_instead_of_logits(model_dir):
    served = _served(model_dir, "on")
    for text in TEXTS:
        group = served.prepare(text, None, GenerationParams(max_new_tokens=12), lambda _: None)
        served.scheduler.add(group)
    served.step()
    served.model.counters.take()
    served.step()
    counted = served.model.counters.take()
    assert counted.session_runs == 2, "the decoder, then the argmax graph"
    assert counted.device_to_host_bytes == len(TEXTS) * 8, "one int64 token id per row"


def test_only_rows_that_need_the_host_bring_their_logits(model_dir):
    served = _served(model_dir, "on")
    sampled = GenerationParams(max_new_tokens=12, do_sample=True, seed=3)
    greedy = GenerationParams(max_new_tokens=12)
    for text, params in zip(TEXTS[:3], [greedy, sampled, sampled], strict=True):
        served.scheduler.add(served.prepare(text, None, params, lambda _: None))
    served.step()
    served.model.counters.take()
    served.step()
    vocab = served.manifest.dims.vocab_size
    assert served.model.counters.take().device_to_host_bytes == 3 * 8 + 2 * vocab * 4
