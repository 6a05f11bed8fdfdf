"""What the manifest says about the decoder's `cross_attention` output: the decoder layers it
averages and, for image models, where the patch grid lies among the encoder positions (so the
server can draw a per-patch heatmap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from export.errors import ExportError
from export.families.base import ExportFamily
from export.onnx_export import CROSS_ATTENTION_OUTPUT
from service.runtime.manifest import CrossAttentionSpec


def resolve_layers(requested: Sequence[int] | None, num_layers: int) -> list[int]:
    """The decoder layers the output averages: all by default; a requested list must be
    non-empty, without repeats and within the decoder's layers."""
    if requested is None:
        return list(range(num_layers))
    layers = list(requested)
    if not layers:
        raise ExportError("attention layers: the list is empty; leave it out for all layers")
    if len(set(layers)) != len(layers):
        raise ExportError(f"attention layers {layers} name a layer twice")
    outside = [layer for layer in layers if not 0 <= layer < num_layers]
    if outside:
        raise ExportError(
            f"attention layers {outside} are out of range: the decoder has {num_layers} layers "
            f"(0..{num_layers - 1})"
        )
    return layers


def cross_attention_spec(
    family: ExportFamily, model: Any, layers: list[int], encoder_length: int
) -> CrossAttentionSpec:
    """The manifest entry; for image models the encoder positions are a prefix (class or
    distillation tokens) followed by the patch grid, row-major."""
    spec = CrossAttentionSpec(layers=layers, output=CROSS_ATTENTION_OUTPUT)
    grid = family.patch_grid(model)
    if grid is None:
        return spec
    rows, cols = grid
    prefix = encoder_length - rows * cols
    if prefix < 0:
        raise ExportError(
            f"the vision encoder gives {encoder_length} positions, fewer than its {rows}x{cols} "
            "patch grid: cross-attention over image patches needs a ViT-style encoder"
        )
    spec.source_prefix, spec.patch_grid = prefix, [rows, cols]
    return spec
