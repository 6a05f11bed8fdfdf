"""Export-time validation: the ONNX graphs against PyTorch and `generate()`, recorded in the
manifest.

Three checks, on one padded batch of mixed lengths:
- logits: the PyTorch wrappers and ONNX Runtime on the same inputs (encoder outputs, then
  decoder steps whose rows have different past and encoder lengths, one joining with an empty
  past), within the tolerance of `compare`;
- batched vs alone: each row's logits from the batched decoder call equal those of the row alone,
  within the same tolerance;
- tokens: a greedy loop over the graphs gives exactly `model.generate()`'s greedy tokens (the
  hard gate: no tolerance).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers import GenerationConfig

from export.families.base import ExportFamily
from export.ort_graphs import DecoderStep, OrtGraphs, encoder_mask, greedy_tokens
from service.runtime.manifest import ImagePreprocessing, SpecialTokens
from service.runtime.tasks import Task

# |a - b| <= LOGITS_ATOL + LOGITS_RTOL * scale, scale = max |b| over the last axis (one token's
# logits, one position's hidden state): float32 rounding in a reordered sum grows with the size of
# the vector's terms, so a logit near 0 in a row whose largest logit is 2700 carries the row's
# error, not its own. The elementwise form (rtol * |b|) refused exactly such a correct export.
# Measured here: differences reach 3-5e-7 of the row's scale (a few float32 epsilons), so
# RTOL = 1e-5 leaves a 20x margin while a real mismatch (wrong weights, masks or positions)
# differs by 1e-3 of the scale and more. ATOL covers vectors of small values.
LOGITS_ATOL = 1e-4
LOGITS_RTOL = 1e-5
GREEDY_NEW_TOKENS = 12
_SOURCE_LENGTHS = (11, 5, 8)  # text rows: different encoder lengths, right-padded
_PAST_LENGTHS = (3, 0, 5)  # decoder rows: different past lengths; one joins with an empty past
_STEP_TOKENS = 2  # new tokens per row in the first batched step (T > 1)
_COMPARED = ("encoder", "decoder_logits", "batched_vs_alone")


@dataclass(frozen=True)
class Difference:
    """How far `actual` is from `reference`: the largest absolute difference, and the largest
    difference in units of the tolerance (`max_scaled` <= 1 passes; NaN never does)."""

    max_abs: float
    max_scaled: float

    def worst(self, other: Difference) -> Difference:
        return Difference(max(self.max_abs, other.max_abs), max(self.max_scaled, other.max_scaled))

    def report(self, name: str) -> dict[str, float]:
        """The parity report's keys for the compared outputs `name`."""
        return {f"{name}_max_abs_diff": self.max_abs, f"{name}_max_scaled_diff": self.max_scaled}


def compare(actual: np.ndarray, reference: np.ndarray) -> Difference:
    """`actual` against `reference` with the tolerance LOGITS_ATOL + LOGITS_RTOL * scale, scale
    being the largest |reference| of each vector along the last axis."""
    a, b = actual.astype(np.float32), reference.astype(np.float32)
    diff = np.abs(a - b)
    tolerance = LOGITS_ATOL + LOGITS_RTOL * np.abs(b).max(axis=-1, keepdims=True)
    return Difference(float(diff.max()), float((diff / tolerance).max()))


def _worst(differences: Iterable[Difference]) -> Difference:
    return functools.reduce(Difference.worst, differences)


def sample_encoder_feeds(
    task: str, special: SpecialTokens, vocab_size: int, image: ImagePreprocessing | None
) -> dict[str, np.ndarray]:
    """A fixed batch of three inputs: text rows of lengths 11, 5, 8 with random non-special
    ids (right-padded), or three random images."""
    rng = np.random.default_rng(0)
    if task == Task.CAPTIONING:
        assert image is not None
        pixels = rng.standard_normal((3, 3, image.height, image.width)).astype(np.float32)
        return {"pixel_values": pixels}
    specials = {special.pad, special.decoder_start, *special.eos} | (
        set() if special.bos is None else {special.bos}
    )
    ordinary = np.array([i for i in range(vocab_size) if i not in specials])
    width = max(_SOURCE_LENGTHS)
    input_ids = np.full((len(_SOURCE_LENGTHS), width), special.pad, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for row, length in enumerate(_SOURCE_LENGTHS):
        input_ids[row, :length] = rng.choice(ordinary, size=length)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def validate(
    family: ExportFamily,
    model: Any,
    graphs: OrtGraphs,
    feeds: dict[str, np.ndarray],
    special: SpecialTokens,
    prefix: list[int],
) -> dict[str, Any]:
    """The parity report recorded in the manifest (logits and greedy tokens)."""
    report: dict[str, Any] = {
        "inputs": _describe(feeds),
        "logits_atol": LOGITS_ATOL,
        "logits_rtol": LOGITS_RTOL,
        **check_logits(family, model, graphs, feeds, prefix),
        "greedy_new_tokens": GREEDY_NEW_TOKENS,
        **check_greedy(model, graphs, feeds, special, prefix),
    }
    return report


def parity_failures(report: dict[str, Any]) -> list[str]:
    """What the report shows to be wrong, in words; empty when the graphs pass."""
    failures = [
        f"{name} differ by {report[f'{name}_max_scaled_diff']:.3g} x the tolerance "
        f"(max abs diff {report[f'{name}_max_abs_diff']:.2e}; tolerance {LOGITS_ATOL:.0e} + "
        f"{LOGITS_RTOL:.0e} x scale)"
        for name in _COMPARED
        if not report[f"{name}_max_scaled_diff"] <= 1.0  # NaN fails too
    ]
    for search in ("greedy", "beam"):
        if not report.get(f"{search}_tokens_identical", True):
            rows = report[f"{search}_mismatched_rows"]
            failures.append(f"{search} tokens differ from generate() in rows {rows}")
    return failures


def _describe(feeds: dict[str, np.ndarray]) -> str:
    if "attention_mask" in feeds:
        lengths = feeds["attention_mask"].sum(axis=1).tolist()
        return f"{len(lengths)} text rows of lengths {lengths}, right-padded"
    return f"{len(feeds['pixel_values'])} random images"


def check_logits(
    family: ExportFamily,
    model: Any,
    graphs: OrtGraphs,
    feeds: dict[str, np.ndarray],
    prefix: list[int],
) -> dict[str, float]:
    """Differences (max abs and max scaled, see `compare`): ONNX Runtime vs the PyTorch wrappers
    (encoder outputs, decoder logits over two batched steps), and each row's batched decoder
    logits vs the row alone."""
    encoder = family.encoder_wrapper(model)
    decoder = family.decoder_wrapper(model)
    onnx_encoder = graphs.run_encoder(feeds)
    with torch.no_grad():
        torch_encoder = encoder(*(torch.from_numpy(feeds[name]) for name in feeds))
    encoder_diff = _worst(
        compare(o, t.numpy()) for t, o in zip(torch_encoder, onnx_encoder, strict=True)
    )

    states, *cross = onnx_encoder
    enc_mask = encoder_mask(feeds, states)
    rows = states.shape[0]
    sequences, past_lengths, alone, batched = mixed_past_step(
        graphs, enc_mask, cross, prefix, _PAST_LENGTHS, seed=1, extra=3
    )
    onnx_logits, presents = graphs.run_decoder(batched)
    decoder_diff = compare(onnx_logits, _torch_logits(decoder, batched))
    alone_diff = _worst(
        compare(onnx_logits[row], row_alone.step(sequences[row], _STEP_TOKENS))
        for row, row_alone in enumerate(alone)
    )
    # A second batched step, over the presents of the first (T = 1).
    total = batched.self_attention_mask.shape[1]
    batched.input_ids = np.array(
        [[seq[length + _STEP_TOKENS]] for seq, length in zip(sequences, past_lengths, strict=True)]
    )
    batched.position_ids = batched.position_ids[:, -1:] + 1
    batched.self_attention_mask = np.concatenate(
        [batched.self_attention_mask, np.ones((rows, 1), dtype=np.int64)], axis=1
    )
    batched.past = presents
    onnx_logits, _ = graphs.run_decoder(batched)
    assert batched.self_attention_mask.shape[1] == total + 1
    decoder_diff = decoder_diff.worst(compare(onnx_logits, _torch_logits(decoder, batched)))
    return (
        encoder_diff.report("encoder")
        | decoder_diff.report("decoder_logits")
        | alone_diff.report("batched_vs_alone")
    )


def check_greedy(
    model: Any,
    graphs: OrtGraphs,
    feeds: dict[str, np.ndarray],
    special: SpecialTokens,
    prefix: list[int],
) -> dict[str, Any]:
    """Greedy tokens of the graphs vs `model.generate()` on the same batch."""
    reference = reference_greedy(model, feeds, special, len(prefix))
    onnx = greedy_tokens(graphs, feeds, prefix, special.eos, GREEDY_NEW_TOKENS)
    mismatched = [row for row, (r, o) in enumerate(zip(reference, onnx, strict=True)) if r != o]
    return {"greedy_tokens_identical": not mismatched, "greedy_mismatched_rows": mismatched}


def reference_greedy(
    model: Any, feeds: dict[str, np.ndarray], special: SpecialTokens, prefix_length: int
) -> list[list[int]]:
    """`generate()`'s plain greedy continuation of each row, up to and including its first eos."""
    inputs = {name: torch.from_numpy(value) for name, value in feeds.items()}
    config = GenerationConfig(
        decoder_start_token_id=special.decoder_start,
        bos_token_id=special.bos,
        eos_token_id=special.eos,
        pad_token_id=special.pad,
        max_new_tokens=GREEDY_NEW_TOKENS,
        num_beams=1,
        do_sample=False,
    )
    with _generation_config(model, config), torch.no_grad():
        sequences = model.generate(**inputs, generation_config=config)
    return [until_eos(row[prefix_length:].tolist(), special.eos) for row in sequences]


@contextlib.contextmanager
def _generation_config(model: Any, config: GenerationConfig) -> Iterator[None]:
    """generate() fills unset values from model.generation_config (the checkpoint's beams, length
    limits, forced tokens ...): swap in the plain one so the reference is exactly greedy."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    """tokens up to and including the first eos (generate() pads finished rows after it)."""
    for index, token in enumerate(tokens):
        if token in eos:
            return tokens[: index + 1]
    return tokens


class RowAlone:
    """One row decoded on its own: its unpadded encoder length and its own past."""

    def __init__(
        self, graphs: OrtGraphs, row: int, enc_mask: np.ndarray, cross: list[np.ndarray]
    ) -> None:
        length = int(enc_mask[row].sum())
        self.graphs = graphs
        self.cross = [c[row : row + 1, :, :length] for c in cross]
        self.enc_mask = np.ones((1, length), dtype=np.int64)
        self.past = graphs.empty_past(1)
        self.length = 0

    def prefill(self, tokens: list[int]) -> None:
        if tokens:
            _, self.past = self.graphs.run_decoder(self._step(tokens))
            self.length = len(tokens)

    def step(self, sequence: list[int], count: int) -> np.ndarray:
        """Logits [count, V] for the next `count` tokens of `sequence` (past kept unchanged)."""
        logits, _ = self.graphs.run_decoder(self.step_inputs(sequence, count))
        return logits[0]

    def step_inputs(self, sequence: list[int], count: int) -> DecoderStep:
        """The decoder inputs for the next `count` tokens of `sequence`, over this row's past."""
        return self._step(sequence[self.length : self.length + count])

    def _step(self, tokens: list[int]) -> DecoderStep:
        count = len(tokens)
        return DecoderStep(
            input_ids=np.array([tokens], dtype=np.int64),
            position_ids=np.arange(self.length, self.length + count, dtype=np.int64)[None],
            self_attention_mask=np.ones((1, self.length + count), dtype=np.int64),
            encoder_attention_mask=self.enc_mask,
            past=self.past,
            cross=self.cross,
        )


class MixedPastStep(NamedTuple):
    """Rows with different past lengths: each row alone (prefilled with its own past) and one
    batched decoder step over them all."""

    sequences: list[list[int]]  # each row's tokens: prefix, its past, then the step's tokens
    past_lengths: list[int]
    alone: list[RowAlone]
    step: DecoderStep


def mixed_past_step(
    graphs: OrtGraphs,
    enc_mask: np.ndarray,
    cross: list[np.ndarray],
    prefix: list[int],
    past_cycle: tuple[int, ...],
    seed: int,
    extra: int,
) -> MixedPastStep:
    """Row r gets past length past_cycle[r % len] of random tokens after the prefix (and
    `extra` more tokens to step with); the rows are prefilled alone and stepped together."""
    rows = enc_mask.shape[0]
    rng = np.random.default_rng(seed)
    past_lengths = [past_cycle[row % len(past_cycle)] for row in range(rows)]
    sequences = [
        prefix + rng.integers(0, graphs.dims.vocab_size, max(past_lengths) + extra).tolist()
        for _ in range(rows)
    ]
    alone = [RowAlone(graphs, row, enc_mask, cross) for row in range(rows)]
    for row, length in enumerate(past_lengths):
        alone[row].prefill(sequences[row][:length])
    step = batched_step(alone, sequences, past_lengths, enc_mask, cross)
    return MixedPastStep(sequences, past_lengths, alone, step)


def batched_step(
    alone: list[RowAlone],
    sequences: list[list[int]],
    past_lengths: list[int],
    enc_mask: np.ndarray,
    cross: list[np.ndarray],
) -> DecoderStep:
    """All rows in one call: each row's own past, left-padded to the longest; _STEP_TOKENS new
    tokens each; the encoder K/V right-padded as the batched encoder gave them."""
    rows, width, count = len(alone), max(past_lengths), _STEP_TOKENS
    past = [
        np.concatenate([_left_pad(row.past[i], width) for row in alone], axis=0)
        for i in range(len(alone[0].past))
    ]
    mask = np.zeros((rows, width + count), dtype=np.int64)
    for row, length in enumerate(past_lengths):
        mask[row, width - length :] = 1
    return DecoderStep(
        input_ids=np.array(
            [seq[n : n + count] for seq, n in zip(sequences, past_lengths, strict=True)]
        ),
        position_ids=np.array([np.arange(n, n + count) for n in past_lengths], dtype=np.int64),
        self_attention_mask=mask,
        encoder_attention_mask=enc_mask,
        past=past,
        cross=cross,
    )


def _left_pad(x: np.ndarray, width: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[2] = (width - x.shape[2], 0)
    return np.pad(x, pad)


def _torch_logits(decoder: torch.nn.Module, step: DecoderStep) -> np.ndarray:
    feeds = step.feeds(len(step.past) // 2)
    with torch.no_grad():
        outputs = decoder(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
    return outputs[0].numpy()


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
