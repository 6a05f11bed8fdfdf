"""Trace a family's two wrappers to ONNX with the graph contract's names and dynamic axes.

The TorchScript exporter (`dynamo=False`) is used: its graphs decoded faster than the dynamo
exporter's on CPU. Samples have batch 2, padding and a past length of 3, so that no dimension
gets specialised to a constant.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from export.errors import ExportError
from export.families.base import ExportFamily
from service.runtime.manifest import GraphSpec, ImagePreprocessing, ModelDims
from service.runtime.tasks import Task

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
DECODER_INPUTS = ["input_ids", "position_ids", "self_attention_mask", "encoder_attention_mask"]
CROSS_ATTENTION_OUTPUT = "cross_attention"  # [B, T, S] float32, the decoder's last output
_SAMPLE_ROWS, _SAMPLE_PAST, _SAMPLE_NEW, _SAMPLE_SOURCE = 2, 3, 2, 7


def key_value_names(prefix: str, num_layers: int) -> list[str]:
    """prefix_key_0, prefix_value_0, prefix_key_1, ... in the contract's order."""
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


def encoder_spec(task: str, num_layers: int) -> GraphSpec:
    inputs = ["pixel_values"] if task == Task.CAPTIONING else ["input_ids", "attention_mask"]
    outputs = ["encoder_hidden_states", *key_value_names("cross", num_layers)]
    return GraphSpec(file=ENCODER_FILE, inputs=inputs, outputs=outputs)


def decoder_spec(num_layers: int) -> GraphSpec:
    inputs = DECODER_INPUTS + key_value_names("past", num_layers)
    inputs += key_value_names("cross", num_layers)
    outputs = ["logits", *key_value_names("present", num_layers), CROSS_ATTENTION_OUTPUT]
    return GraphSpec(file=DECODER_FILE, inputs=inputs, outputs=outputs)


def encoder_sample(task: str, image: ImagePreprocessing | None) -> tuple[torch.Tensor, ...]:
    """Two rows; for text the second is right-padded."""
    if task == Task.CAPTIONING:
        assert image is not None
        return (torch.randn(_SAMPLE_ROWS, 3, image.height, image.width),)
    input_ids = torch.full((_SAMPLE_ROWS, _SAMPLE_SOURCE), 5, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    return input_ids, attention_mask


def decoder_sample(dims: ModelDims, cross: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Row 0 has one padded past column, row 1 none; both add two tokens."""
    rows, past, new = _SAMPLE_ROWS, _SAMPLE_PAST, _SAMPLE_NEW
    self_mask = torch.ones(rows, past + new, dtype=torch.long)
    self_mask[0, 0] = 0
    position_ids = torch.stack(
        [torch.arange(past - 1, past - 1 + new), torch.arange(past, past + new)]
    )
    past_kv = [
        torch.randn(rows, dims.num_heads, past, dims.head_dim) for _ in range(2 * dims.num_layers)
    ]
    encoder_mask = torch.ones(rows, cross[0].shape[2], dtype=torch.long)
    input_ids = torch.full((rows, new), 5, dtype=torch.long)
    return (input_ids, position_ids, self_mask, encoder_mask, *past_kv, *cross)


def export_graphs(
    family: ExportFamily,
    model: torch.nn.Module,
    out_dir: Path,
    opset: int,
    image: ImagePreprocessing | None,
    attention_layers: Sequence[int] | None = None,
) -> tuple[GraphSpec, GraphSpec]:
    """Write encoder.onnx and decoder.onnx into out_dir; returns their specs. The decoder's
    cross_attention averages `attention_layers` (None: all layers)."""
    dims = family.dims(model)
    enc_spec, dec_spec = encoder_spec(family.task, dims.num_layers), decoder_spec(dims.num_layers)
    encoder = family.encoder_wrapper(model)
    sample = encoder_sample(family.task, image)
    with torch.no_grad():
        cross = tuple(encoder(*sample)[1:])
    source_axes = {0: "B"} if family.task == Task.CAPTIONING else {0: "B", 1: "S"}
    encoder_axes = {name: source_axes for name in enc_spec.inputs}
    encoder_axes["encoder_hidden_states"] = {0: "B", 1: "S"}
    encoder_axes |= {name: {0: "B", 2: "S"} for name in key_value_names("cross", dims.num_layers)}
    _trace(encoder, sample, out_dir / ENCODER_FILE, enc_spec, encoder_axes, opset)

    decoder_axes = {
        "input_ids": {0: "B", 1: "T"},
        "position_ids": {0: "B", 1: "T"},
        "self_attention_mask": {0: "B", 1: "P_plus_T"},
        "encoder_attention_mask": {0: "B", 1: "S"},
        "logits": {0: "B", 1: "T"},
        CROSS_ATTENTION_OUTPUT: {0: "B", 1: "T", 2: "S"},
    }
    decoder_axes |= {name: {0: "B", 2: "P"} for name in key_value_names("past", dims.num_layers)}
    decoder_axes |= {name: {0: "B", 2: "S"} for name in key_value_names("cross", dims.num_layers)}
    decoder_axes |= {
        name: {0: "B", 2: "P_plus_T"} for name in key_value_names("present", dims.num_layers)
    }
    decoder = family.decoder_wrapper(model, attention_layers)
    _trace(
        decoder, decoder_sample(dims, cross), out_dir / DECODER_FILE, dec_spec, decoder_axes, opset
    )
    return enc_spec, dec_spec


def _trace(
    module: torch.nn.Module,
    sample: tuple[torch.Tensor, ...],
    path: Path,
    spec: GraphSpec,
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    module.eval()  # the exporter copies the wrapper's mode onto the model: never export Dropout
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python values
        torch.onnx.export(
            module,
            sample,
            str(path),
            input_names=spec.inputs,
            output_names=spec.outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    check_graph(path, spec)


def check_graph(path: Path, spec: GraphSpec) -> None:
    """The graph has exactly the contract's io names and no Dropout node."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [value.name for value in graph.input]
    outputs = [value.name for value in graph.output]
    if inputs != spec.inputs or outputs != spec.outputs:
        raise ExportError(
            f"{path.name}: io names {inputs} -> {outputs} differ from the contract "
            f"{spec.inputs} -> {spec.outputs}"
        )
    if any(node.op_type == "Dropout" for node in graph.node):
        raise ExportError(f"{path.name} contains a Dropout node: the model was not in eval mode")
