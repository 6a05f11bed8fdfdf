"""fp16 and int8 versions of the fp32 graphs, and how often they choose fp32's tokens.

fp16: onnxruntime's float16 converter; logits and cross_attention stay float32 outputs (the
contract) and so does the lm head's last MatMul. T5 additionally keeps its residual stream, RMS
norms and FFN output projections in float32, as onnxruntime's own T5 tools do: T5's activations
overflow float16.
int8: dynamic quantization of the weights (onnxruntime.quantization.quantize_dynamic).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from export.onnx_export import CROSS_ATTENTION_OUTPUT, DECODER_FILE, ENCODER_FILE

_EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps a file at 2 GB: weights beyond go outside
_FP32_OPS = {"t5": ["Add", "Pow", "ReduceMean", "Sqrt", "Div"]}
_FP32_NODE_NAME_PARTS = {"t5": ["/DenseReluDense/wo/"]}
_FLOAT32_OUTPUTS = ("logits", CROSS_ATTENTION_OUTPUT)  # cast back to float32 inside the graph


def convert_graphs(src_dir: Path, dst_dir: Path, dtype: str, architecture: str) -> None:
    """Write dst_dir/{encoder,decoder}.onnx in `dtype` from the fp32 graphs in src_dir."""
    for name in (ENCODER_FILE, DECODER_FILE):
        src, dst = src_dir / name, dst_dir / name
        if dtype == "fp16":
            _to_fp16(src, dst, architecture)
        elif dtype == "int8":
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                use_external_data_format=_is_large(onnx.load(str(src), load_external_data=False)),
            )
        else:
            raise ValueError(f"no conversion to {dtype!r}")


def _to_fp16(src: Path, dst: Path, architecture: str) -> None:
    model = onnx.load(str(src))
    parts = _FP32_NODE_NAME_PARTS.get(architecture, [])
    keep_fp32 = [n.name for n in model.graph.node if any(part in n.name for part in parts)]
    outputs = [output.name for output in model.graph.output]
    if "logits" in outputs:
        keep_fp32 += _logits_head(model)
    float32_outputs = [name for name in _FLOAT32_OUTPUTS if name in outputs]
    converted = convert_float_to_float16(
        model,
        keep_io_types=float32_outputs or False,
        op_block_list=DEFAULT_OP_BLOCK_LIST + _FP32_OPS.get(architecture, []),
        node_block_list=keep_fp32,
    )
    _save(converted, dst)


def _logits_head(model: onnx.ModelProto) -> list[str]:
    """The nodes from the lm head's MatMul to `logits` (bias Add, Cast), kept in float32 for the
    precision of the scores that choose tokens."""
    producers = {output: node for node in model.graph.node for output in node.output}
    names, tensor = [], "logits"
    while tensor in producers and len(names) < 4:
        node = producers[tensor]
        names.append(node.name)
        if node.op_type == "MatMul":
            break
        tensor = node.input[0]
    return names


def _is_large(model: onnx.ModelProto) -> bool:
    sizes = (len(t.raw_data) or 4 * len(t.float_data) for t in model.graph.initializer)
    return sum(sizes) > _EXTERNAL_DATA_BYTES


def _save(model: onnx.ModelProto, path: Path) -> None:
    if _is_large(model):
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{path.name}.data")
    else:
        onnx.save_model(model, str(path))


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    """Share of rows whose greedy tokens equal fp32's, and of fp32's token positions matched."""
    matched = sum(
        a == b
        for ref, out in zip(reference, other, strict=True)
        for a, b in zip(ref, out, strict=False)
    )
    positions = sum(len(ref) for ref in reference)
    identical = sum(ref == out for ref, out in zip(reference, other, strict=True))
    return {
        "greedy_rows_identical": identical / len(reference),
        "greedy_token_agreement": matched / positions if positions else 1.0,
    }
