"""What one engine step cost the runtime, counted rather than timed: bytes between host arrays
and the runtime's tensors, K/V buffers created, ONNX Runtime session runs, and seconds inside
those runs.

The GPU decode step is bound by fixed per-step costs (docs/benchmarks.md, "GPU"), and these
counts are what a design change moves: they follow exactly from the design, so CPU tests can
assert them where no GPU is lent. Transfers are counted as if the runtime's tensors lived on a
device even when they are host memory (the CPU provider, NumpyOps): a CPU run shows what the
same step copies over the bus on CUDA. Host-side numpy work around the runs is not counted here;
the caller gets it as its step time less `session_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TypeVar

T = TypeVar("T")


@dataclass
class StepCounters:
    """Running totals since the last `take()`; one object per loaded model, shared by its
    sessions and its TensorOps (only the step thread touches it)."""

    host_to_device_bytes: int = 0  # host arrays fed to a session or uploaded into a tensor
    device_to_host_bytes: int = 0  # session outputs the host reads (logits, token ids, ...)
    kv_allocations: int = 0  # K/V buffers created (session outputs or TensorOps copies)
    session_runs: int = 0  # ONNX Runtime runs: encoder, decoder, row-op and token graphs
    session_seconds: float = 0.0  # wall time inside those runs

    def run(self, call: Callable[[], T]) -> T:
        """`call()` (one ONNX Runtime run), counted and timed."""
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.session_runs += 1
            self.session_seconds += time.perf_counter() - started

    def take(self) -> StepCounters:
        """The totals so far (a copy); the counters start again from zero."""
        taken = replace(self)
        for f in fields(self):
            setattr(self, f.name, f.default)
        return taken

    def host_seconds(self, step_seconds: float) -> float:
        """The part of a step of `step_seconds` spent outside ONNX Runtime (Python, numpy)."""
        return max(step_seconds - self.session_seconds, 0.0)
