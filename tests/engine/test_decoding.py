"""Our batched numpy logits processors against transformers' own LogitsProcessor classes.

Each test builds a batch whose rows have different lengths and settings, runs our processor on
the whole batch once, and compares every row with transformers' processor run on that row alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation import logits_process as hf

from service.engine.decoding import (
    NO_TOKEN,
    RowParams,
    process_logits,
    sample_tokens,
    softmax,
)
from service.engine.validation import ResolvedParams
from tests.engine.params import resolved_params

VOCAB = 40
EOS = np.array([2])


def _params(**overrides) -> ResolvedParams:
    return resolved_params(**{"max_length": 30, **overrides})


def _batch(rng: np.random.Generator, lengths: list[int], vocab: int = VOCAB):
    """Random histories (small vocab so repeats happen) and random logits."""
    sequences = np.full((len(lengths), max(lengths) + 3), -1, dtype=np.int64)
    for row, length in enumerate(lengths):
        sequences[row, :length] = rng.integers(0, 6, size=length)
    logits = rng.normal(size=(len(lengths), vocab)).astype(np.float32) * 3
    return sequences, np.array(lengths, dtype=np.int64), logits


def _run_ours(logits, sequences, lengths, per_row: list[ResolvedParams]) -> np.ndarray:
    rows = RowParams.concat([RowParams.for_request(p, 1) for p in per_row])
    return process_logits(logits, sequences, lengths, rows, EOS)


def _run_hf(processor, logits_row, history) -> np.ndarray:
    ids = torch.tensor(history, dtype=torch.long)[None, :]
    return processor(ids, torch.tensor(logits_row)[None, :]).numpy()[0]


def _assert_rows_match(ours, sequences, lengths, logits, make_hf) -> None:
    for row, length in enumerate(lengths):
        expected = _run_hf(make_hf(row), logits[row], sequences[row, :length])
        np.testing.assert_allclose(ours[row], expected, rtol=1e-6, atol=1e-6)


def test_repetition_penalty_matches_transformers_per_row():
    rng = np.random.default_rng(0)
    sequences, lengths, logits = _batch(rng, [1, 5, 9, 3])
    penalties = [1.3, 1.0, 0.7, 2.0]
    ours = _run_ours(logits, sequences, lengths, [_params(repetition_penalty=p) for p in penalties])
    _assert_rows_match(
        ours,
        sequences,
        lengths,
        logits,
        lambda row: hf.RepetitionPenaltyLogitsProcessor(penalties[row]),
    )


def test_no_repeat_ngram_matches_transformers_per_row():
    rng = np.random.default_rng(1)
    sequences, lengths, logits = _batch(rng, [2, 7, 12, 12, 4])
    sizes = [2, 2, 3, 1, 5]
    ours = _run_ours(logits, sequences, lengths, [_params(no_repeat_ngram_size=n) for n in sizes])
    assert np.isinf(ours).any(), "the test histories should trigger bans"
    _assert_rows_match(
        ours, sequences, lengths, logits, lambda row: hf.NoRepeatNGramLogitsProcessor(sizes[row])
    )


def test_min_length_suppresses_eos_only_below_the_minimum():
    rng = np.random.default_rng(2)
    sequences, lengths, logits = _batch(rng, [1, 4, 6])
    minimums = [5, 5, 5]
    ours = _run_ours(logits, sequences, lengths, [_params(min_length=m) for m in minimums])
    _assert_rows_match(
        ours,
        sequences,
        lengths,
        logits,
        lambda row: hf.MinLengthLogitsProcessor(minimums[row], EOS.tolist()),
    )


def test_forced_bos_and_forced_eos_match_transformers():
    rng = np.random.default_rng(3)
    sequences, lengths, logits = _batch(rng, [1, 2, 9, 9])
    per_row = [
        _params(forced_bos_token_id=0),
        _params(forced_bos_token_id=0),
        _params(forced_eos_token_id=2, max_length=10),
        _params(forced_eos_token_id=2, max_length=12),
    ]
    ours = _run_ours(logits, sequences, lengths, per_row)

    def make_hf(row):
        if row < 2:
            return hf.ForcedBOSTokenLogitsProcessor(0)
        return hf.ForcedEOSTokenLogitsProcessor(per_row[row].max_length, 2)

    _assert_rows_match(ours, sequences, lengths, logits, make_hf)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.8), (1.3, 10, 0.9), (0.5, 50, 0.3)],
)
def test_sampling_warpers_match_transformers(temperature, top_k, top_p):
    rng = np.random.default_rng(4)
    sequences, lengths, logits = _batch(rng, [3, 3, 6])
    params = _params(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    ours = _run_ours(logits, sequences, lengths, [params] * 3)
    warpers = hf.LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(hf.TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(hf.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(hf.TopPLogitsWarper(top_p))
    _assert_rows_match(ours, sequences, lengths, logits, lambda row: warpers)


def test_warpers_leave_greedy_rows_untouched():
    rng = np.random.default_rng(5)
    sequences, lengths, logits = _batch(rng, [2, 2])
    per_row = [_params(temperature=0.5, top_k=3), _params(do_sample=True, top_k=3)]
    ours = _run_ours(logits, sequences, lengths, per_row)
    np.testing.assert_array_equal(ours[0], logits[0])
    assert np.isfinite(ours[1]).sum() == 3


def test_beam_rows_are_processed_as_log_probabilities():
    rng = np.random.default_rng(6)
    sequences, lengths, logits = _batch(rng, [4, 4])
    ours = _run_ours(logits, sequences, lengths, [_params(num_beams=2)] * 2)
    expected = torch.log_softmax(torch.tensor(logits), dim=-1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def _draw(scores: np.ndarray, seed: int, count: int) -> list[int]:
    generator = np.random.default_rng(seed)
    return [int(sample_tokens(scores, [generator])[0]) for _ in range(count)]


def test_sampling_is_reproducible_per_seed():
    scores = np.random.default_rng(8).normal(size=(1, VOCAB)).astype(np.float32)
    assert _draw(scores, seed=7, count=50) == _draw(scores, seed=7, count=50)
    assert _draw(scores, seed=7, count=50) != _draw(scores, seed=8, count=50)


def test_sampling_follows_the_distribution_and_never_draws_filtered_tokens():
    scores = np.array([[np.log(0.1), -np.inf, np.log(0.6), np.log(0.3)]], dtype=np.float32)
    counts = np.bincount(_draw(scores, seed=7, count=4000), minlength=4) / 4000
    assert counts[1] == 0
    np.testing.assert_allclose(counts, softmax(scores)[0], atol=0.03)


def test_a_row_with_every_token_banned_gets_no_token_and_leaves_the_others_alone():
    """Such a row gets NO_TOKEN (the runner fails its request alone) and draws nothing from its
    generator; top-p passes it through; the other rows sample as they would alone."""
    scores = np.random.default_rng(9).normal(size=(3, VOCAB)).astype(np.float32)
    scores[1] = -np.inf
    alone = [
        int(sample_tokens(scores[row : row + 1], [np.random.default_rng(row)])[0]) for row in (0, 2)
    ]
    generators = [np.random.default_rng(row) for row in range(3)]
    assert sample_tokens(scores, generators).tolist() == [alone[0], NO_TOKEN, alone[1]]
    assert generators[1].random() == np.random.default_rng(1).random()
    assert (sample_tokens(scores[1:2], [generators[1]]) == NO_TOKEN).all()
    banned = np.full((2, VOCAB), -np.inf, np.float32)
    processed = _run_ours(
        banned,
        *_batch(np.random.default_rng(1), [2, 3])[:2],
        [_params(do_sample=True, top_p=0.5)] * 2,
    )
    assert np.isneginf(processed).all()


def test_banned_tokens_match_transformers_no_bad_words_on_every_row():
    """Marian's generation config bans <pad> (bad_words_ids=[[pad]]): no row may pick it."""
    rng = np.random.default_rng(5)
    sequences, lengths, logits = _batch(rng, [1, 4, 7])
    rows = RowParams.concat([RowParams.for_request(_params(), 1) for _ in lengths])
    banned = np.array([7, 11])
    ours = process_logits(logits, sequences, lengths, rows, EOS, banned)
    processor = hf.NoBadWordsLogitsProcessor([[7], [11]], eos_token_id=int(EOS[0]))
    _assert_rows_match(ours, sequences, lengths, logits, lambda row: processor)
