"""Per-step runtime counts of one run, summarized for the bench outputs (profile, gpu).

The counts (service/runtime/step_counters.py) are exact and the same on every machine for the
same requests, so the JSON can be compared across runs and devices; only `host_ms` and
`step_ms` are timings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.runtime.step_counters import StepCounters


@dataclass(frozen=True)
class StepCost:
    """One step, or the median over steps."""

    host_to_device_bytes: float
    device_to_host_bytes: float
    kv_allocations: float
    session_runs: float
    step_ms: float
    host_ms: float  # step_ms less the time inside ONNX Runtime runs

    @classmethod
    def of(cls, counters: StepCounters, seconds: float) -> StepCost:
        return cls(
            counters.host_to_device_bytes,
            counters.device_to_host_bytes,
            counters.kv_allocations,
            counters.session_runs,
            seconds * 1000,
            counters.host_seconds(seconds) * 1000,
        )


def step_costs(counters: list[StepCounters], seconds: list[float]) -> dict[str, Any]:
    """The first step (it runs the encoder) and the median decode step after it."""
    costs = [asdict(StepCost.of(c, s)) for c, s in zip(counters, seconds, strict=True)]
    later = costs[1:] or costs
    median = {key: float(np.median([c[key] for c in later])) for key in costs[0]}
    return {"steps": len(costs), "first_step": costs[0], "decode_step_median": median}
