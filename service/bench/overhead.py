"""Server overhead: the latency a request gets over gRPC minus what the same request takes when
the engine runs it in-process (service.engine.offline, same scheduler and runner, no transport).

The two are timed alternately on the same request, one at a time, so drift of a shared machine
falls on both; the overhead is the median of the paired differences. A short pause before each
timed call lets the other side's ONNX Runtime threads stop spinning (they would steal the CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.bench.workload import BenchRequest
from service.client import AttnserveClient
from service.engine.config import EngineConfig
from service.engine.offline import run_to_completion
from service.engine.served import ServedModel
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel

SETTLE_S = 0.1


@dataclass(frozen=True)
class Overhead:
    pairs: int
    in_process_p50_ms: float
    grpc_p50_ms: float
    overhead_p50_ms: float  # median of (gRPC - in-process) over the pairs
    overhead_p95_ms: float


def measure_overhead(
    model_dir: Path, target: str, request: BenchRequest, pairs: int, warmup: int = 1
) -> Overhead:
    """Time `request` `pairs` times in-process and over gRPC (unary) to the server at `target`."""
    served = ServedModel(LoadedModel.load(model_dir), EngineConfig())
    params = GenerationParams(**request.params)
    payload = request.payload

    def in_process() -> float:
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        run_to_completion(served, [payload], [params])
        return time.perf_counter() - started

    with AttnserveClient(target) as client:
        captioning = served.manifest.task == "captioning"
        call = client.caption if captioning else client.summarize

        def over_grpc() -> float:
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            call(payload, model=served.manifest.name, **request.params)
            return time.perf_counter() - started

        for _ in range(warmup):
            in_process(), over_grpc()
        timed = np.array([(in_process(), over_grpc()) for _ in range(pairs)]) * 1000.0
    differences = timed[:, 1] - timed[:, 0]
    return Overhead(
        pairs=pairs,
        in_process_p50_ms=float(np.median(timed[:, 0])),
        grpc_p50_ms=float(np.median(timed[:, 1])),
        overhead_p50_ms=float(np.median(differences)),
        overhead_p95_ms=float(np.percentile(differences, 95)),
    )
