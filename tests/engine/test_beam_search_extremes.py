"""Beam search keeps an answer where normalised scores fall below the -1e9 sentinel of an empty
slot (a negative length_penalty on a long answer): found by fuzzing the API, which answered
INTERNAL ("beam search ended without a finished hypothesis")."""

from __future__ import annotations

import numpy as np

from service.engine.beam_search import BeamSearchGroup

EOS, START, VOCAB, NUM_BEAMS = 0, 1, 6, 2


def search(length_penalty: float, token_log_prob: float, max_length: int) -> np.ndarray:
    """Run a search whose every token costs about `token_log_prob`, EOS never best."""
    group = BeamSearchGroup(
        NUM_BEAMS, 1, max_length, length_penalty, early_stopping=False, eos_ids=np.array([EOS])
    )
    sequences = np.full((NUM_BEAMS, 1), START, dtype=np.int64)
    log_probs = np.full((NUM_BEAMS, VOCAB), token_log_prob, dtype=np.float32)
    log_probs[:, 2:] += np.arange(VOCAB - 2, dtype=np.float32)  # distinct, EOS the worst
    while True:
        step = group.step(log_probs, sequences, sequences.shape[1])
        sequences = np.concatenate(
            [sequences[step.source_beams], step.next_tokens[:, None]], axis=1
        )
        if step.done:
            return group.best()


def test_a_negative_length_penalty_on_a_long_answer_still_keeps_a_hypothesis():
    best = search(length_penalty=-10.0, token_log_prob=-50.0, max_length=40)

    assert best.shape == (40,) and best[0] == START


def test_an_answer_scored_within_the_sentinel_is_the_highest_scoring_one():
    best = search(length_penalty=1.0, token_log_prob=-1.0, max_length=6)

    assert list(best[1:]) == [VOCAB - 1] * 5  # the most likely token every step
