"""Greedy token choice where the logits are: a tiny ONNX graph run through IOBinding.

Copying every row's logits to the host costs B x V x 4 bytes a step (50,265 floats a row for
BART) and a numpy argmax over them; on a GPU that copy and the host work are a large part of the
fixed per-step cost (docs/benchmarks.md, "GPU"). This graph takes the decoder's logits
[B, T, V] where the decoder left them (a device OrtValue on CUDA) and returns, to the host, only
each row's argmax at the last position (int64 [B]) and the last-position logits of the rows the
caller still needs on the host (`host_rows`: sampling, beams, active logits processors), so a
batch of greedy rows moves B x 8 bytes. The argmax skips `banned` (row, token) pairs, which is
how a minimum length (no EOS yet) is kept on the device. Which rows need the host and what is
banned is the engine's decision (service.engine.decoding.RowParams).

ArgMax is opset 11: the CUDA provider registers ArgMax only up to opset 11 in older releases (a
later opset would fall back to a CPU node and a copy). ONNX's ArgMax keeps the first of equal
maxima, as numpy's argmax does, so the tokens are the numpy path's.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from service.runtime.sessions import CUDA, provider_for
from service.runtime.step_counters import StepCounters

OPSET = 11


def argmax_graph(logits_type: str) -> bytes:
    """The serialized graph for logits of ONNX Runtime's type `logits_type` ("tensor(float)" or
    "tensor(float16)"): logits [B, T, V], host_rows int64 [R], banned int64 [K, 2] -> tokens
    int64 [B] (the argmax with the banned (row, token) scores at -inf), host_logits [R, V]
    (unchanged), both at the last position T - 1."""
    from onnx import TensorProto, helper

    elem_type = {"tensor(float)": TensorProto.FLOAT, "tensor(float16)": TensorProto.FLOAT16}[
        logits_type
    ]
    value_type = helper.tensor_dtype_to_np_dtype(elem_type)
    initializers = [
        helper.make_tensor("last", TensorProto.INT64, [], [-1]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    minus_inf = helper.make_tensor("minus_inf", elem_type, [1], [value_type.type(-np.inf)])
    nodes = [
        helper.make_node("Gather", ["logits", "last"], ["last_logits"], axis=1),
        helper.make_node("Shape", ["banned"], ["banned_shape"]),
        helper.make_node("Slice", ["banned_shape", "zero", "one"], ["banned_count"]),
        helper.make_node("ConstantOfShape", ["banned_count"], ["lows"], value=minus_inf),
        helper.make_node("ScatterND", ["last_logits", "banned", "lows"], ["allowed"]),
        helper.make_node("ArgMax", ["allowed"], ["tokens"], axis=1, keepdims=0),
        helper.make_node("Gather", ["last_logits", "host_rows"], ["host_logits"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "device_argmax",
        [
            helper.make_tensor_value_info("logits", elem_type, [None, None, None]),
            helper.make_tensor_value_info("host_rows", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("banned", TensorProto.INT64, [None, 2]),
        ],
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("host_logits", elem_type, [None, None]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model.SerializeToString()


class DeviceArgmax:
    """Runs `argmax_graph` on the device that holds the logits."""

    def __init__(
        self, logits_type: str, device: str, device_id: int, counters: StepCounters
    ) -> None:
        name = provider_for(device)  # checked, and CUDA's libraries loaded, as for a model
        provider = (name, {"device_id": device_id}) if name == CUDA else name
        options = ort.SessionOptions()
        options.log_severity_level = 3
        graph = argmax_graph(logits_type)
        self._session = ort.InferenceSession(graph, sess_options=options, providers=[provider])
        self._counters = counters

    def run(
        self, logits: ort.OrtValue | np.ndarray, host_rows: np.ndarray, banned: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(each row's argmax token but the `banned` (row, token) pairs, the float32 logits
        [R, V] of `host_rows`)."""
        binding = self._session.io_binding()
        if isinstance(logits, np.ndarray):  # the CPU provider: the decoder's output as it is
            binding.bind_cpu_input("logits", logits)
        else:
            binding.bind_ortvalue_input("logits", logits)
        rows = np.ascontiguousarray(host_rows, dtype=np.int64)
        pairs = np.ascontiguousarray(banned, dtype=np.int64).reshape(-1, 2)
        binding.bind_cpu_input("host_rows", rows)
        binding.bind_cpu_input("banned", pairs)
        binding.bind_output("tokens", "cpu")
        binding.bind_output("host_logits", "cpu")
        self._counters.run(lambda: self._session.run_with_iobinding(binding))
        tokens, host_logits = (value.numpy() for value in binding.get_outputs())
        self._counters.host_to_device_bytes += rows.nbytes + pairs.nbytes
        self._counters.device_to_host_bytes += tokens.nbytes + host_logits.nbytes
        return tokens, np.asarray(host_logits, np.float32)
