"""Beam search for one request whose num_beams hypotheses are rows of the decode batch.

A step-by-step port of transformers 5.24 `GenerationMixin._beam_search` for a batch of one
(`_get_top_k_continuations`, `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
`_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`), including its -1e9
sentinels and float32 arithmetic, so that the chosen hypothesis is the one `generate()` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NEG = np.float32(-1.0e9)


def _topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first (torch.topk's sorted order)."""
    candidates = np.argpartition(-values, k - 1)[:k] if k < values.size else np.arange(values.size)
    return candidates[np.argsort(-values[candidates], kind="stable")]


def _finished_first(scores: np.ndarray, finished: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best entries: finished hypotheses first, each kind best score first.

    transformers ranks by score alone, so the -1e9 sentinel of an empty slot outranks a finished
    hypothesis whose normalised score fell below it (a negative length_penalty on a long answer)
    and the search ends with none. Wherever transformers keeps a hypothesis, the order is the
    same."""
    return np.lexsort((-scores, ~finished))[:k]


@dataclass
class BeamStep:
    """What the batch must do after a step: rebuild the group's rows from `source_beams`."""

    source_beams: np.ndarray  # [num_beams] which current row each new row continues
    next_tokens: np.ndarray  # [num_beams] the token each new row appends
    done: bool  # the request is finished; `best()` holds its answer
    no_token: bool = False  # every candidate was banned (-inf): the request cannot go on


class BeamSearchGroup:
    """The beam state of one request: running scores and the finished hypotheses."""

    def __init__(
        self,
        num_beams: int,
        prompt_len: int,
        max_length: int,
        length_penalty: float,
        early_stopping: bool | str,
        eos_ids: np.ndarray,
    ) -> None:
        self.num_beams = num_beams
        self.prompt_len = prompt_len
        self.max_length = max_length
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.eos_ids = eos_ids
        self.beams_to_keep = max(2, 1 + len(eos_ids)) * num_beams
        self.running_scores = np.full(num_beams, _NEG, dtype=np.float32)
        self.running_scores[0] = 0.0  # only the first beam expands at the first step
        self.finished_scores = np.full(num_beams, _NEG, dtype=np.float32)
        self.finished_tokens: list[np.ndarray | None] = [None] * num_beams
        self.is_finished = np.zeros(num_beams, dtype=bool)
        self.improvement_possible = True
        # explain: each running beam's per-token cross-attention so far [num_beams, steps, S],
        # and each finished hypothesis's; None while the request does not collect it
        self.running_attention: np.ndarray | None = None
        self.finished_attention: list[np.ndarray | None] = [None] * num_beams

    def step(
        self,
        log_probs: np.ndarray,
        sequences: np.ndarray,
        cur_len: int,
        attention: np.ndarray | None = None,
    ) -> BeamStep:
        """Advance by one token given the processed log-probs [num_beams, V] of the group's rows.

        `sequences` are the rows' tokens so far ([num_beams, >= cur_len]), prompt included;
        `attention` ([num_beams, S], explain only) is the cross-attention that chose this step's
        tokens: it follows each hypothesis as its tokens do.
        """
        nb, vocab = log_probs.shape
        accumulated = (log_probs + self.running_scores[:, None]).reshape(-1)
        top = _topk_indices(accumulated, self.beams_to_keep)
        top_scores = accumulated[top]
        top_beams, top_tokens = np.divmod(top, vocab)
        hits_stop = np.isin(top_tokens, self.eos_ids) | (cur_len + 1 >= self.max_length)

        # e. the best num_beams candidates that did not stop keep running
        running = top_scores + hits_stop.astype(np.float32) * _NEG
        keep = _topk_indices(running, nb)
        self.running_scores = running[keep]

        histories = self._attention_histories(attention)
        self._update_finished(
            top_scores, top_beams, top_tokens, hits_stop, sequences, cur_len, histories
        )
        if histories is not None:
            self.running_attention = histories[top_beams[keep]]
        self._check_early_stop(cur_len + 1)
        done = (
            not self.improvement_possible
            or (bool(self.is_finished.all()) and self.early_stopping is True)
            or bool(hits_stop.all())
        )
        return BeamStep(
            source_beams=top_beams[keep],
            next_tokens=top_tokens[keep],
            done=done,
            no_token=bool(np.isneginf(top_scores.max())),  # the best of all is -inf
        )

    def _update_finished(
        self,
        top_scores: np.ndarray,
        top_beams: np.ndarray,
        top_tokens: np.ndarray,
        hits_stop: np.ndarray,
        sequences: np.ndarray,
        cur_len: int,
        histories: np.ndarray | None,
    ) -> None:
        """f. Finished candidates among the top num_beams may enter the finished hypotheses."""
        just_finished = hits_stop & (np.arange(hits_stop.size) < self.num_beams)
        if not just_finished.any():
            return  # every candidate gets -1e9 and cannot outrank the current hypotheses
        penalty = np.float32((cur_len + 1 - self.prompt_len) ** self.length_penalty)
        candidates = top_scores / penalty
        if self.is_finished.all() and self.early_stopping is True:
            candidates = candidates + _NEG
        if not self.improvement_possible:
            candidates = candidates + _NEG
        candidates = candidates + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate([self.finished_scores, candidates])
        merged_finished = np.concatenate([self.is_finished, just_finished])
        best = _finished_first(merged_scores, merged_finished, self.num_beams)
        tokens: list[np.ndarray | None] = []
        attention: list[np.ndarray | None] = []
        for index in best:
            if index < self.num_beams:
                tokens.append(self.finished_tokens[index])
                attention.append(self.finished_attention[index])
            else:
                k = index - self.num_beams
                hypothesis = np.append(sequences[top_beams[k], :cur_len], top_tokens[k])
                tokens.append(hypothesis)
                attention.append(None if histories is None else histories[top_beams[k]])
        self.finished_tokens = tokens
        self.finished_attention = attention
        self.finished_scores = merged_scores[best]
        self.is_finished = merged_finished[best]

    def _check_early_stop(self, cur_len: int) -> None:
        """Can a running beam still beat the worst finished hypothesis?"""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_len
        else:
            best_length = cur_len - self.prompt_len
        best_running = self.running_scores[0] / np.float32(best_length**self.length_penalty)
        # An empty slot can always be filled. (transformers compares with the slot's -1e9
        # sentinel instead, which stops the search with no hypothesis at all once the best
        # running score is normalised below it; elsewhere the outcome is the same.)
        if self.is_finished.all():
            self.improvement_possible &= bool(best_running > self.finished_scores.min())

    def _attention_histories(self, attention: np.ndarray | None) -> np.ndarray | None:
        """Each current row's attention history with this step's appended [num_beams, t, S]."""
        if attention is None:
            return None
        step = attention[:, None, :]
        if self.running_attention is None:
            return step
        return np.concatenate([self.running_attention, step], axis=1)

    def best_attention(self) -> np.ndarray | None:
        """The per-token attention of `best()`'s generated tokens, when it was collected."""
        return self.finished_attention[0]

    def best(self) -> np.ndarray:
        """The highest-scoring finished hypothesis (prompt included)."""
        best = self.finished_tokens[0]
        if best is None:
            raise RuntimeError("beam search ended without a finished hypothesis")
        return best
