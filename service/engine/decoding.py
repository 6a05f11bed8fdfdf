"""Logits processing and token choice for a whole decode batch at once, in numpy.

Each processor reproduces its transformers 5.24 namesake (`generation/logits_process.py`) in the
order `GenerationMixin._get_logits_processor` applies them, but for rows that each carry their own
settings: repetition penalty, no-repeat n-grams, the model's banned tokens (bad_words_ids),
minimum length, forced BOS, forced EOS, then (for sampling rows only) temperature, top-k and
top-p. Settings live in `RowParams`, one array entry per batch row, so that one call handles
every row without a Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from service.engine.validation import ResolvedParams

NO_TOKEN = -1  # "no forced token" in RowParams.forced_bos / forced_eos


@dataclass
class RowParams:
    """Per-row generation settings, aligned with the rows of a DecodeBatch."""

    max_length: np.ndarray  # int64
    min_length: np.ndarray  # int64
    is_beam: np.ndarray  # bool: scores are log-probabilities (transformers' beam search)
    do_sample: np.ndarray  # bool
    temperature: np.ndarray  # float32
    top_k: np.ndarray  # int64, 0 = off
    top_p: np.ndarray  # float32, 1 = off
    repetition_penalty: np.ndarray  # float32, 1 = off
    no_repeat_ngram_size: np.ndarray  # int64, 0 = off
    forced_bos: np.ndarray  # int64, NO_TOKEN = off
    forced_eos: np.ndarray  # int64, NO_TOKEN = off
    explain: np.ndarray  # bool: the row's cross-attention is collected
    prompt_len: np.ndarray  # int64: tokens before the first chosen one (the rest are forced)

    @classmethod
    def for_request(cls, params: ResolvedParams, rows: int) -> RowParams:
        """The settings of one request, repeated over its rows (num_beams rows for beam search)."""

        def column(value, dtype) -> np.ndarray:
            return np.full(rows, value, dtype=dtype)

        return cls(
            max_length=column(params.max_length, np.int64),
            min_length=column(params.min_length, np.int64),
            is_beam=column(params.num_beams > 1, np.bool_),
            do_sample=column(params.do_sample, np.bool_),
            temperature=column(params.temperature, np.float32),
            top_k=column(params.top_k, np.int64),
            top_p=column(params.top_p, np.float32),
            repetition_penalty=column(params.repetition_penalty, np.float32),
            no_repeat_ngram_size=column(params.no_repeat_ngram_size, np.int64),
            forced_bos=column(_or_none(params.forced_bos_token_id), np.int64),
            forced_eos=column(_or_none(params.forced_eos_token_id), np.int64),
            explain=column(params.explain, np.bool_),
            prompt_len=column(params.prompt_len, np.int64),
        )

    def needs_host_logits(self, lengths: np.ndarray) -> np.ndarray:
        """bool [B]: rows whose next token is not simply the argmax of their logits less
        `min_length_bans` and the model's `every_row_bans`, at the current `lengths`: beam and
        sampling rows, and rows some other processor of `process_logits` acts on now. The
        others' token can be chosen where the logits are (on the device). Must name every
        processor `process_logits` applies, with its condition."""
        return (
            self.is_beam
            | self.do_sample
            | (self.repetition_penalty != 1.0)
            | (self.no_repeat_ngram_size > 0)
            | ((self.forced_bos != NO_TOKEN) & (lengths == 1))
            | ((self.forced_eos != NO_TOKEN) & (lengths == self.max_length - 1))
        )

    def min_length_bans(self, lengths: np.ndarray, eos_ids: np.ndarray) -> np.ndarray:
        """int64 [K, 2]: the (row, EOS token) pairs `apply_min_length` sets to -inf now, for a
        token choice that does not see the host's scores."""
        rows = np.flatnonzero(lengths < self.min_length)
        return np.stack(np.meshgrid(rows, eos_ids, indexing="ij"), axis=-1).reshape(-1, 2)

    def take(self, rows: np.ndarray) -> RowParams:
        return RowParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[RowParams]) -> RowParams:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


def every_row_bans(rows: int, banned_ids: np.ndarray) -> np.ndarray:
    """int64 [K, 2]: the (row, token) pairs `apply_banned_tokens` sets to -inf, for a token
    choice that does not see the host's scores (the model's bad words hold on every row)."""
    grid = np.meshgrid(np.arange(rows), banned_ids, indexing="ij")
    return np.stack(grid, axis=-1).reshape(-1, 2).astype(np.int64)


def _or_none(token: int | None) -> int:
    return NO_TOKEN if token is None else token


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _history(sequences: np.ndarray, lengths: np.ndarray, fill: int) -> np.ndarray:
    """Each row's tokens so far, with `fill` beyond its length; trimmed to the longest row."""
    width = int(lengths.max())
    tokens = sequences[:, :width]
    return np.where(np.arange(width)[None, :] < lengths[:, None], tokens, fill)


def apply_repetition_penalty(
    scores: np.ndarray, sequences: np.ndarray, lengths: np.ndarray, penalty: np.ndarray
) -> None:
    """RepetitionPenaltyLogitsProcessor: scale down the score of every token already present."""
    rows = np.flatnonzero(penalty != 1.0)
    if rows.size == 0:
        return
    vocab = scores.shape[1]
    ids = _history(sequences[rows], lengths[rows], fill=vocab)  # `vocab` = the dummy column
    padded = np.concatenate([scores[rows], np.zeros((rows.size, 1), scores.dtype)], axis=1)
    picked = np.take_along_axis(padded, ids, axis=1)
    p = penalty[rows, None]
    picked = np.where(picked < 0, picked * p, picked / p)
    np.put_along_axis(padded, ids, picked, axis=1)
    scores[rows] = padded[:, :vocab]


def apply_no_repeat_ngram(
    scores: np.ndarray, sequences: np.ndarray, lengths: np.ndarray, ngram_size: np.ndarray
) -> None:
    """NoRepeatNGramLogitsProcessor: ban every token that would repeat an n-gram of the row."""
    for n in np.unique(ngram_size[ngram_size > 0]):
        n = int(n)
        rows = np.flatnonzero((ngram_size == n) & (lengths >= n))
        if rows.size == 0:
            continue
        row_lengths = lengths[rows]
        history = _history(sequences[rows], row_lengths, fill=NO_TOKEN)
        windows = sliding_window_view(history, n, axis=1)  # [r, W, n]
        starts = row_lengths[:, None] - (n - 1) + np.arange(n - 1)[None, :]
        prefix = np.take_along_axis(history, starts, axis=1)  # the last n-1 tokens
        matches = np.all(windows[..., :-1] == prefix[:, None, :], axis=-1)
        matches &= np.arange(windows.shape[1])[None, :] <= (row_lengths - n)[:, None]
        hit_rows, hit_windows = np.nonzero(matches)
        scores[rows[hit_rows], windows[hit_rows, hit_windows, -1]] = -np.inf


def apply_banned_tokens(scores: np.ndarray, banned_ids: np.ndarray) -> None:
    """NoBadWordsLogitsProcessor for one-token bad words: those tokens are never chosen."""
    if banned_ids.size:
        scores[:, banned_ids] = -np.inf


def apply_min_length(
    scores: np.ndarray, lengths: np.ndarray, min_length: np.ndarray, eos_ids: np.ndarray
) -> None:
    """MinLengthLogitsProcessor: no EOS while the sequence is shorter than min_length."""
    rows = np.flatnonzero(lengths < min_length)
    if rows.size:
        scores[np.ix_(rows, eos_ids)] = -np.inf


def apply_forced_tokens(scores: np.ndarray, lengths: np.ndarray, params: RowParams) -> None:
    """ForcedBOS (the first generated token) and ForcedEOS (the token before max_length)."""
    bos = (params.forced_bos != NO_TOKEN) & (lengths == 1)
    eos = (params.forced_eos != NO_TOKEN) & (lengths == params.max_length - 1)
    for mask, forced in ((bos, params.forced_bos), (eos, params.forced_eos)):
        rows = np.flatnonzero(mask)
        if rows.size:
            scores[rows] = -np.inf
            scores[rows, forced[rows]] = 0.0


def apply_top_k(scores: np.ndarray, rows: np.ndarray, top_k: np.ndarray) -> None:
    """TopKLogitsWarper: keep the k best scores (ties with the k-th kept), -inf elsewhere."""
    vocab = scores.shape[1]
    for k in np.unique(top_k):
        k = min(int(k), vocab)
        group = rows[top_k == k]
        kth = np.partition(scores[group], vocab - k, axis=1)[:, vocab - k]
        sub = scores[group]
        sub[sub < kth[:, None]] = -np.inf
        scores[group] = sub


def _finite_candidates(sub: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, token ids, is-real) of each row's finite entries, packed to the widest row.

    After top-k only k entries per row are finite; packing them first makes the sort that
    top-p needs cost k log k per row instead of V log V. Rows that are mostly finite are
    returned as they are.
    """
    finite = sub > -np.inf
    counts = finite.sum(axis=1)
    width = int(counts.max())
    if width * 4 > sub.shape[1]:
        tokens = np.broadcast_to(np.arange(sub.shape[1]), sub.shape)
        return sub, tokens, np.ones(sub.shape, bool)
    rows, cols = np.nonzero(finite)
    within = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    values = np.full((sub.shape[0], width), -np.inf, sub.dtype)
    tokens = np.zeros((sub.shape[0], width), np.int64)
    real = np.zeros((sub.shape[0], width), bool)
    values[rows, within] = sub[rows, cols]
    tokens[rows, within] = cols
    real[rows, within] = True
    return values, tokens, real


def apply_top_p(scores: np.ndarray, rows: np.ndarray, top_p: np.ndarray) -> None:
    """TopPLogitsWarper: keep the smallest set of best tokens whose probability exceeds top_p.

    Entries already -inf have probability 0 and, in transformers' ascending sort, come first
    and stay removed; so only the finite entries need sorting.
    """
    sub = scores[rows]
    values, tokens, real = _finite_candidates(sub)
    if values.shape[1] == 0:
        return  # every token of every row is banned already: nothing to remove
    order = np.argsort(values, axis=1)
    with np.errstate(invalid="ignore"):  # a row with every token banned: NaN, removes nothing
        cumulative = np.cumsum(softmax(np.take_along_axis(values, order, axis=1)), axis=1)
    threshold = (1.0 - top_p.astype(np.float64)).astype(np.float32)
    remove = cumulative <= threshold[:, None]
    remove[:, -1] = False  # min_tokens_to_keep = 1
    remove &= np.take_along_axis(real, order, axis=1)
    removed_rows, removed_at = np.nonzero(remove)
    sub[removed_rows, np.take_along_axis(tokens, order, axis=1)[removed_rows, removed_at]] = -np.inf
    scores[rows] = sub


def apply_sampling_warpers(scores: np.ndarray, params: RowParams) -> None:
    """Temperature, top-k and top-p on the sampling rows (transformers' warper order)."""
    rows = np.flatnonzero(params.do_sample)
    if rows.size == 0:
        return
    scores[rows] /= params.temperature[rows, None]
    k_rows = rows[params.top_k[rows] > 0]
    if k_rows.size:
        apply_top_k(scores, k_rows, params.top_k[k_rows])
    p_rows = rows[params.top_p[rows] < 1.0]
    if p_rows.size:
        apply_top_p(scores, p_rows, params.top_p[p_rows])


def process_logits(
    logits: np.ndarray,
    sequences: np.ndarray,
    lengths: np.ndarray,
    params: RowParams,
    eos_ids: np.ndarray,
    banned_ids: np.ndarray | None = None,
) -> np.ndarray:
    """The processed scores of every row's next token (float32 [B, V]).

    `lengths` is each row's current decoder length (transformers' `input_ids.shape[-1]`);
    `banned_ids` are the model's one-token bad words (its generation config's bad_words_ids).
    Beam rows are turned into log-probabilities first, as transformers' beam search does.
    """
    scores = np.array(logits, dtype=np.float32, copy=True)
    beam_rows = np.flatnonzero(params.is_beam)
    if beam_rows.size:
        scores[beam_rows] = log_softmax(scores[beam_rows])
    apply_repetition_penalty(scores, sequences, lengths, params.repetition_penalty)
    apply_no_repeat_ngram(scores, sequences, lengths, params.no_repeat_ngram_size)
    if banned_ids is not None:
        apply_banned_tokens(scores, banned_ids)
    apply_min_length(scores, lengths, params.min_length, eos_ids)
    apply_forced_tokens(scores, lengths, params)
    apply_sampling_warpers(scores, params)
    return scores


def sample_tokens(scores: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    """One token per row drawn from softmax(scores), each row with its request's generator;
    NO_TOKEN for a row whose every token is banned (-inf), where generate() raises.

    Inverse-CDF sampling over each row's finite entries (few after top-k): one uniform draw per
    row from the request's own generator makes a request's tokens independent of its batch.
    """
    values, tokens, _ = _finite_candidates(scores)
    has_mass = values > -np.inf
    live = np.flatnonzero(has_mass.any(axis=1))
    chosen = np.full(scores.shape[0], NO_TOKEN, np.int64)
    if live.size == 0:
        return chosen
    if live.size < scores.shape[0]:  # rare: copies only when a row has no token left
        values, tokens, has_mass = values[live], tokens[live], has_mass[live]
    cumulative = np.cumsum(softmax(values), axis=1, dtype=np.float64)
    draws = np.array([rngs[row].random() for row in live]) * cumulative[:, -1]
    picked = (cumulative <= draws[:, None]).sum(axis=1)
    # a draw at the very top lands on the last token with mass
    last = values.shape[1] - 1 - np.argmax(has_mass[:, ::-1], axis=1)
    picked = np.minimum(picked, last)
    chosen[live] = tokens[np.arange(live.size), picked]
    return chosen
