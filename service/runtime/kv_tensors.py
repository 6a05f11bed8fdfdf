"""The K/V tensors of running rows, and the row operations on them, for each kind of memory.

The engine's DecodeBatch moves rows (join, leave, beam copies) only through `TensorOps`, so the
same batch code keeps its K/V in host numpy arrays (`NumpyOps`, the CPU execution provider) or
in device buffers (`OrtValueOps`, OrtValues on the model's execution provider). Which one a model
uses is the runtime's choice (service.runtime.model); the engine never allocates K/V itself.

`OrtValueOps` runs its row moves (gather, join with padding, trim, beam copies) as four tiny ONNX
graphs through IOBinding, built at start-up with `onnx.helper` (the `onnx` package is needed only
for --device cuda). It runs on the CPU provider too, which is how its graphs are tested on
machines without a GPU.

Both count what they do in the model's `StepCounters`: every K/V buffer they create, every
graph run, every host array they upload (service.runtime.step_counters).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from service.runtime.sessions import CPU, CUDA
from service.runtime.step_counters import StepCounters

Tensor = Any  # a numpy array, or a device buffer of the runtime's TensorOps


class TensorOps(Protocol):
    """Row operations on the [B, H, N, Dh] K/V tensors (N = past or encoder length)."""

    def zeros(self, shape: tuple[int, ...]) -> Tensor: ...
    def take_rows(self, x: Tensor, rows: np.ndarray) -> Tensor: ...
    def compact_rows(self, x: Tensor, keep: np.ndarray) -> Tensor:
        """Rows `keep` of x in that order, where x belongs to a batch being replaced: its
        memory may be reused (overwritten)."""
        ...

    def concat_rows(
        self, parts: list[Tensor], length: int, pad_left: bool, room: Tensor | None = None
    ) -> Tensor:
        """Zero-pad every part along axis 2 to `length` (left or right), stack along axis 0;
        into `room` (from `room_for`) when it fits and `parts[0]` has no room of its own."""
        ...

    def room_for(self, x: Tensor, rows: int, length: int) -> Tensor | None:
        """A zeroed buffer that `concat_rows` can join `rows` rows of x's shape at `length`
        into, made now (beside the steps) rather than in the step that joins them; None when
        x already has that room, or when a buffer made early saves nothing on this memory."""
        ...

    def slice_length(self, x: Tensor, start: int, stop: int) -> Tensor: ...
    def copy_rows(self, x: Tensor, dst: np.ndarray, src: np.ndarray) -> Tensor:
        """x with rows `dst` replaced by the (old) rows `src`."""
        ...

    def length(self, x: Tensor) -> int: ...
    def nbytes(self, x: Tensor) -> int: ...


class NumpyOps:
    """TensorOps on host numpy arrays (the CPU execution provider).

    On a CPU the copies are what rows joining and leaving cost (the cross K/V of a full batch
    of long inputs is hundreds of MB), so they are avoided where the layout allows: rows leave by
    moving only the rows that change place, in place (`compact_rows`), and the cross K/V are
    allocated with spare rows that newcomers are written into (`concat_rows`, right padding).
    Every tensor handed to ONNX Runtime stays C-contiguous (a leading-rows view is), else it
    would copy it on every decoder call.
    """

    def __init__(self, dtype: type = np.float32, counters: StepCounters | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.counters = StepCounters() if counters is None else counters

    def _created(self, x: np.ndarray) -> np.ndarray:
        self.counters.kv_allocations += 1
        return x

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return self._created(np.zeros(shape, self.dtype))

    def take_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._created(x[rows])

    def compact_rows(self, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        n = keep.size
        moved = np.flatnonzero(keep != np.arange(n)) if n <= x.shape[0] else None
        # In place, each moved row is copied twice (through numpy's temporary): worth it while
        # fewer than half the rows move. Unique `keep` means no kept row is overwritten first.
        if moved is None or 2 * moved.size >= n or np.unique(keep).size != n:
            return self._created(x[keep])
        x[moved] = x[keep[moved]]
        return x[:n]

    def concat_rows(
        self, parts: list[np.ndarray], length: int, pad_left: bool, room: Tensor | None = None
    ) -> np.ndarray:
        first = parts[0]
        total_rows = sum(p.shape[0] for p in parts)
        buffer = None if pad_left else _spare_rows(first, total_rows, length)
        row = first.shape[0] if buffer is not None else 0
        if buffer is None:
            if room is not None and _fits(room, first, total_rows, length):
                buffer = self._created(room)
            else:
                capacity = total_rows if pad_left else _capacity(total_rows)
                shape = (capacity, first.shape[1], length, first.shape[3])
                buffer = self._created(np.zeros(shape, dtype=first.dtype))
            parts_to_write = parts
        else:
            parts_to_write = parts[1:]
        for part in parts_to_write:
            n, width = part.shape[0], part.shape[2]
            if pad_left:
                buffer[row : row + n, :, length - width :] = part
            else:
                buffer[row : row + n, :, :width] = part
                buffer[row : row + n, :, width:] = 0  # spare rows may hold old values
            row += n
        return buffer[:total_rows]

    def room_for(self, x: np.ndarray, rows: int, length: int) -> np.ndarray | None:
        """Made on the encoder's thread: a new buffer's pages are faulted in as it is first
        written, which for the cross K/V of a full batch of long inputs took 0.1-0.7 s of a
        step (docs/benchmarks.md, issue 19); copying into pages already there takes ~0.05 s."""
        if _spare_rows(x, rows, length) is not None:
            return None
        buffer = np.zeros((_capacity(rows), x.shape[1], length, x.shape[3]), x.dtype)
        buffer.fill(0)  # np.zeros maps its pages lazily: write them now, here
        return buffer

    def slice_length(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        sliced = np.ascontiguousarray(x[:, :, start:stop])
        return sliced if np.may_share_memory(sliced, x) else self._created(sliced)

    def copy_rows(self, x: np.ndarray, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        x[dst] = x[src]  # the right side is gathered first, so overlapping moves are safe
        return x

    def length(self, x: np.ndarray) -> int:
        return x.shape[2]

    def nbytes(self, x: np.ndarray) -> int:
        base = x.base  # spare rows of a cross buffer are held too
        return base.nbytes if isinstance(base, np.ndarray) else x.nbytes


def _capacity(rows: int) -> int:
    """Rows a new cross K/V buffer holds for `rows` rows: spare ones for the next newcomers."""
    return rows + max(4, rows // 4)


def _fits(room: np.ndarray, like: np.ndarray, rows: int, length: int) -> bool:
    return room.shape[0] >= rows and room.shape[1:] == (like.shape[1], length, like.shape[3])


def _spare_rows(x: np.ndarray, total_rows: int, length: int) -> np.ndarray | None:
    """The buffer x is the leading rows of, if it has room for `total_rows` rows of `length`."""
    base = x.base
    if (
        not isinstance(base, np.ndarray)
        or base.ndim != 4
        or base.shape[1:] != (x.shape[1], length, x.shape[3])
        or base.shape[0] < total_rows
        or x.shape[2] != length
        or not x.flags.c_contiguous
        or x.ctypes.data != base.ctypes.data
    ):
        return None
    return base


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

    def __init__(
        self,
        dtype: type,
        device: str = "cuda",
        device_id: int = 0,
        counters: StepCounters | None = None,
    ) -> None:
        from onnx import TensorProto

        self.dtype = np.dtype(dtype)
        self.counters = StepCounters() if counters is None else counters
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
        """One row-op graph run; its output is a new buffer on the device."""
        session = self._sessions[op]
        binding = session.io_binding()
        for name, value in device.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in host.items():
            index = np.ascontiguousarray(value, dtype=np.int64)
            self.counters.host_to_device_bytes += index.nbytes
            binding.bind_cpu_input(name, index)
        binding.bind_output("y", self.device, self.device_id)
        self.counters.run(lambda: session.run_with_iobinding(binding))
        self.counters.kv_allocations += 1
        return binding.get_outputs()[0]

    def zeros(self, shape: tuple[int, ...]) -> ort.OrtValue:
        self.counters.kv_allocations += 1
        if np.prod(shape) == 0:
            return ort.OrtValue.ortvalue_from_shape_and_type(
                list(shape), self.dtype, self.device, self.device_id
            )
        host = np.zeros(shape, self.dtype)
        self.counters.host_to_device_bytes += host.nbytes
        return ort.OrtValue.ortvalue_from_numpy(host, self.device, self.device_id)

    def take_rows(self, x: ort.OrtValue, rows: np.ndarray) -> ort.OrtValue:
        return self._run("take_rows", {"x": x}, {"rows": rows})

    def compact_rows(self, x: ort.OrtValue, keep: np.ndarray) -> ort.OrtValue:
        return self.take_rows(x, keep)  # device memory is fast: a gather costs little

    def room_for(self, x: ort.OrtValue, rows: int, length: int) -> None:
        return None  # device memory is mapped when allocated: nothing to do early

    def concat_rows(
        self,
        parts: list[ort.OrtValue],
        length: int,
        pad_left: bool,
        room: ort.OrtValue | None = None,
    ) -> ort.OrtValue:
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
