"""TensorOps for K/V kept on the device as OrtValues: no host round trip when rows change.

Row moves (gather, join with padding, trim, beam copies) run as four tiny ONNX graphs on the
model's execution provider through IOBinding. The graphs are built at start-up with `onnx.helper`
(the `onnx` package is needed only for --device cuda). The same class runs on the CPU provider,
which is how its graphs are tested on machines without a GPU.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from service.runtime.sessions import CPU, CUDA

OPSET = 17


def _graphs(elem_type: int) -> dict[str, bytes]:
    """Serialized ONNX models of the row operations for one K/V element type."""
    from onnx import TensorProto, helper

    def tensor(name: str, dtype: int = elem_type, rank: int = 4):
        return helper.make_tensor_value_info(name, dtype, [None] * rank)

    def model(nodes, inputs, initializers=()) -> bytes:
        graph = helper.make_graph(nodes, "kv_op", inputs, [tensor("y")], list(initializers))
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        proto.ir_version = 8
        return proto.SerializeToString()

    idx = TensorProto.INT64
    axes = helper.make_tensor("axes", idx, [1], [2])
    return {
        "take_rows": model(
            [helper.make_node("Gather", ["x", "rows"], ["y"], axis=0)],
            [tensor("x"), tensor("rows", idx, 1)],
        ),
        "pad_concat": model(
            [
                helper.make_node("Pad", ["a", "pads_a"], ["pa"]),
                helper.make_node("Pad", ["b", "pads_b"], ["pb"]),
                helper.make_node("Concat", ["pa", "pb"], ["y"], axis=0),
            ],
            [tensor("a"), tensor("b"), tensor("pads_a", idx, 1), tensor("pads_b", idx, 1)],
        ),
        "slice_length": model(
            [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
            [tensor("x"), tensor("starts", idx, 1), tensor("ends", idx, 1)],
            [axes],
        ),
        "copy_rows": model(
            [
                helper.make_node("Gather", ["x", "src"], ["moved"], axis=0),
                helper.make_node("ScatterND", ["x", "dst", "moved"], ["y"]),
            ],
            [tensor("x"), tensor("src", idx, 1), tensor("dst", idx, 2)],
        ),
    }


class OrtValueOps:
    """TensorOps on OrtValues ([B, H, N, Dh], dtype of the model's K/V) on one device."""

    def __init__(self, dtype: type, device: str = "cuda", device_id: int = 0) -> None:
        from onnx import TensorProto

        self.dtype = np.dtype(dtype)
        self.device = device
        self.device_id = device_id
        elem = TensorProto.FLOAT16 if self.dtype == np.float16 else TensorProto.FLOAT
        provider = (CUDA, {"device_id": device_id}) if device == "cuda" else CPU
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._sessions = {
            name: ort.InferenceSession(graph, sess_options=options, providers=[provider])
            for name, graph in _graphs(elem).items()
        }

    def _run(self, op: str, device: dict[str, ort.OrtValue], host: dict[str, np.ndarray]):
        binding = self._sessions[op].io_binding()
        for name, value in device.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in host.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value, dtype=np.int64))
        binding.bind_output("y", self.device, self.device_id)
        self._sessions[op].run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def zeros(self, shape: tuple[int, ...]) -> ort.OrtValue:
        if np.prod(shape) == 0:
            return ort.OrtValue.ortvalue_from_shape_and_type(
                list(shape), self.dtype, self.device, self.device_id
            )
        host = np.zeros(shape, self.dtype)
        return ort.OrtValue.ortvalue_from_numpy(host, self.device, self.device_id)

    def take_rows(self, x: ort.OrtValue, rows: np.ndarray) -> ort.OrtValue:
        return self._run("take_rows", {"x": x}, {"rows": rows})

    def compact_rows(self, x: ort.OrtValue, keep: np.ndarray) -> ort.OrtValue:
        return self.take_rows(x, keep)  # device memory is fast: a gather costs little

    def concat_rows(self, parts: list[ort.OrtValue], length: int, pad_left: bool) -> ort.OrtValue:
        def pads(part: ort.OrtValue) -> np.ndarray:
            missing = length - part.shape()[2]
            before, after = (missing, 0) if pad_left else (0, missing)
            return np.array([0, 0, before, 0, 0, 0, after, 0], np.int64)

        joined = parts[0]
        for part in parts[1:]:
            joined = self._run(
                "pad_concat",
                {"a": joined, "b": part},
                {"pads_a": pads(joined), "pads_b": pads(part)},
            )
        return joined

    def slice_length(self, x: ort.OrtValue, start: int, stop: int) -> ort.OrtValue:
        return self._run("slice_length", {"x": x}, {"starts": [start], "ends": [stop]})

    def copy_rows(self, x: ort.OrtValue, dst: np.ndarray, src: np.ndarray) -> ort.OrtValue:
        return self._run("copy_rows", {"x": x}, {"src": src, "dst": dst[:, None]})

    def length(self, x: ort.OrtValue) -> int:
        return int(x.shape()[2])

    def nbytes(self, x: ort.OrtValue) -> int:
        return int(np.prod(x.shape())) * self.dtype.itemsize
