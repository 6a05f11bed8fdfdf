"""Export-time check of the decoder's `cross_attention` output against transformers itself.

The reference is the real model's forward with `output_attentions=True` (its `cross_attentions`,
one [B, H, T, S] tensor per layer, reduced as the graph reduces them), not our export wrapper:
so a wrapper that hooked the wrong module or averaged the wrong axis fails here. Each row of a
padded batch (different encoder lengths, different left-padded past lengths) is compared with
the row's own unpadded forward pass, once from the batched decoder call and once from the row's
call alone; padded encoder positions must carry no weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from export.families.base import ExportFamily
from export.ort_graphs import OrtGraphs, encoder_mask
from export.parity import max_abs_diff, mixed_past_step

ATTENTION_TOLERANCE = 1e-4
_PAST_LENGTHS = (4, 0, 2)  # tokens each row has decoded before the checked step
_DIFF_KEYS = ("cross_attention_batched_max_abs_diff", "cross_attention_alone_max_abs_diff")


def reduce_cross_attentions(per_layer: Sequence[torch.Tensor], layers: Sequence[int]) -> np.ndarray:
    """transformers' per-layer [B, H, T, S] weights -> [B, T, S]: the mean over the heads and the
    chosen layers, the contract's reduction."""
    return torch.stack([per_layer[layer] for layer in layers]).mean(dim=(0, 2)).float().numpy()


def check_cross_attention(
    family: ExportFamily,
    model: Any,
    graphs: OrtGraphs,
    feeds: dict[str, np.ndarray],
    prefix: list[int],
    layers: Sequence[int],
) -> dict[str, Any]:
    """Max abs diffs between the graph's cross_attention and transformers' reduced
    cross_attentions, for one batched decoder step and for each row alone."""
    states, *cross = graphs.run_encoder(feeds)
    enc_mask = encoder_mask(feeds, states)
    sequences, past_lengths, alone, step = mixed_past_step(
        graphs, enc_mask, cross, prefix, _PAST_LENGTHS, seed=3, extra=2
    )
    count = step.input_ids.shape[1]
    batched = graphs.run_cross_attention(step)

    batched_diff = alone_diff = 0.0
    for row, past in enumerate(past_lengths):
        tokens = sequences[row][: past + count]
        expected = _reference(family, model, _row_inputs(feeds, enc_mask, row), tokens, layers)
        expected = expected[0, -count:]  # [count, S of this row]
        padded = np.zeros_like(batched[row])
        padded[:, : expected.shape[1]] = expected
        batched_diff = max(batched_diff, max_abs_diff(batched[row], padded))
        row_alone = graphs.run_cross_attention(alone[row].step_inputs(sequences[row], count))
        alone_diff = max(alone_diff, max_abs_diff(row_alone[0], expected))
    return {
        "cross_attention_layers": list(layers),
        "cross_attention_tolerance": ATTENTION_TOLERANCE,
        "cross_attention_batched_max_abs_diff": batched_diff,
        "cross_attention_alone_max_abs_diff": alone_diff,
    }


def attention_failures(report: dict[str, Any]) -> list[str]:
    """What the report shows to be wrong with the cross_attention output, in words."""
    return [
        f"{key} = {report[key]:.2e} > {ATTENTION_TOLERANCE:.0e}"
        for key in _DIFF_KEYS
        if not report[key] <= ATTENTION_TOLERANCE  # NaN fails too
    ]


def _row_inputs(
    feeds: dict[str, np.ndarray], enc_mask: np.ndarray, row: int
) -> dict[str, torch.Tensor]:
    """One row's encoder inputs without its padding."""
    length = int(enc_mask[row].sum())
    inputs = {name: torch.from_numpy(value[row : row + 1]) for name, value in feeds.items()}
    if "attention_mask" in inputs:
        inputs = {name: value[:, :length] for name, value in inputs.items()}
    return inputs


def _reference(
    family: ExportFamily,
    model: Any,
    inputs: dict[str, torch.Tensor],
    tokens: list[int],
    layers: Sequence[int],
) -> np.ndarray:
    with torch.no_grad():
        per_layer = family.reference_cross_attentions(model, inputs, torch.tensor([tokens]))
    return reduce_cross_attentions(per_layer, layers)
