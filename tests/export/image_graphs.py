"""Export a captioning family's two wrappers with torch.onnx (TorchScript), for the tests only.

Stands in for export.exporter until it lands; names and dynamic axes follow the graph contract.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from export.families.image_captioning import ImageCaptioningFamily

OPSET = 17


def decoder_input_names(num_layers: int) -> list[str]:
    names = ["input_ids", "position_ids", "self_attention_mask", "encoder_attention_mask"]
    names += [f"past_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
    return names + [f"cross_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


def export_graphs(family: ImageCaptioningFamily, model, out_dir: Path) -> tuple[str, str]:
    dims = family.dims(model)
    layers = dims.num_layers
    height, width = family.image_size(model)
    pixel_values = torch.randn(2, 3, height, width)
    cross_names = [f"cross_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    encoder = family.encoder_wrapper(model)
    encoder_path = str(Path(out_dir) / "encoder.onnx")
    with torch.no_grad():
        cross = encoder(pixel_values)[1:]
    torch.onnx.export(
        encoder,
        (pixel_values,),
        encoder_path,
        input_names=["pixel_values"],
        output_names=["encoder_hidden_states", *cross_names],
        dynamic_axes={"pixel_values": {0: "B"}, "encoder_hidden_states": {0: "B", 1: "S"}}
        | {name: {0: "B", 2: "S"} for name in cross_names},
        opset_version=OPSET,
        dynamo=False,
    )
    batch, past, new = 2, 3, 2
    past_kv = [torch.randn(batch, dims.num_heads, past, dims.head_dim)] * (2 * layers)
    sample = (
        torch.ones(batch, new, dtype=torch.long),
        torch.arange(past, past + new).expand(batch, new).contiguous(),
        torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]),
        torch.ones(batch, cross[0].shape[2], dtype=torch.long),
        *past_kv,
        *cross,
    )
    present_names = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    input_names = decoder_input_names(layers)
    axes = {"input_ids": {0: "B", 1: "T"}, "position_ids": {0: "B", 1: "T"}}
    axes |= {"self_attention_mask": {0: "B", 1: "PT"}, "encoder_attention_mask": {0: "B", 1: "S"}}
    axes |= {name: {0: "B", 2: "P"} for name in input_names if name.startswith("past_")}
    axes |= {name: {0: "B", 2: "S"} for name in cross_names}
    axes |= {"logits": {0: "B", 1: "T"}} | {name: {0: "B", 2: "PT"} for name in present_names}
    decoder_path = str(Path(out_dir) / "decoder.onnx")
    torch.onnx.export(
        family.decoder_wrapper(model),
        sample,
        decoder_path,
        input_names=input_names,
        output_names=["logits", *present_names],
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    for path in (encoder_path, decoder_path):
        ops = {node.op_type for node in onnx.load(path).graph.node}
        assert "Dropout" not in ops, f"{path} contains Dropout"
    return encoder_path, decoder_path
