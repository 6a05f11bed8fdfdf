"""Server overhead: the latency a request gets over gRPC minus what the same request takes when
the engine runs it in-process (service.engine.sync_driver, same scheduler and runner, no transport).

The two are timed alternately on the same request, one at a time, so drift of a shared machine
falls on both; the overhead is the median of the paired differences. A short pause before each
timed call lets the other side's ONNX Runtime threads stop spinning (they would steal the CPU).

On a shared 2-core machine the decode steps of one request vary by tens of milliseconds from run
to run, which swamps a few milliseconds of overhead. So, given the server's /metrics, each pair is
also split: the time outside decode steps (transport, queueing, wake-ups, bookkeeping) on each
side, and the difference in step time itself (threads of the server process competing with the
steps for the cores).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.scrape import server_seconds_probe
from bench.workload import BenchRequest
from service.client import AttnserveClient
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel
from service.runtime.tasks import Task

SETTLE_S = 0.1


@dataclass(frozen=True)
class Overhead:
    pairs: int
    in_process_p50_ms: float
    grpc_p50_ms: float
    overhead_p50_ms: float  # median of (gRPC - in-process) over the pairs
    overhead_p95_ms: float
    # With the server's metrics (else None), medians over the pairs of:
    outside_steps_p50_ms: float | None = None
    """(gRPC latency - server step time) - (in-process latency - in-process step time)."""
    transport_p50_ms: float | None = None
    """gRPC latency - the server's own RPC duration: the wire, (de)serialization, grpc's threads."""
    step_time_difference_p50_ms: float | None = None
    """Server step time - in-process step time: what the server's threads cost the steps."""


@dataclass(frozen=True)
class _Pair:
    in_process_s: float
    in_process_steps_s: float
    grpc_s: float
    server_rpc_s: float | None
    server_steps_s: float | None


def measure_overhead(
    model_dir: Path,
    target: str,
    request: BenchRequest,
    pairs: int,
    warmup: int = 1,
    metrics_url: str | None = None,
) -> Overhead:
    """Time `request` `pairs` times in-process and over gRPC (unary) to the server at `target`;
    with `metrics_url` (the server's /metrics), split each pair as the Overhead fields say."""
    served = ServedModel(LoadedModel.load(model_dir), EngineConfig())
    params = GenerationParams(**request.params)
    payload = request.payload
    model = served.manifest.name
    probe = server_seconds_probe(metrics_url, model) if metrics_url else None

    with AttnserveClient(target) as client:
        call = client.caption if served.manifest.task == Task.CAPTIONING else client.summarize

        def timed_pair() -> _Pair:
            steps: list[float] = []
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            run_to_completion(served, [payload], [params], steps)
            in_process = time.perf_counter() - started
            time.sleep(SETTLE_S)
            before = probe() if probe else None
            started = time.perf_counter()
            call(payload, model=model, **request.params)
            grpc_s = time.perf_counter() - started
            after = probe() if probe else None
            if before is None or after is None:
                return _Pair(in_process, sum(steps), grpc_s, None, None)
            rpc, server_steps = (a - b for a, b in zip(after, before, strict=True))
            return _Pair(in_process, sum(steps), grpc_s, rpc, server_steps)

        for _ in range(warmup):
            timed_pair()
        timed = [timed_pair() for _ in range(pairs)]
    return _summarize(timed)


def _summarize(timed: list[_Pair]) -> Overhead:
    def ms(values) -> np.ndarray:
        return np.array(list(values), dtype=np.float64) * 1000.0

    in_process = ms(p.in_process_s for p in timed)
    grpc_ms = ms(p.grpc_s for p in timed)
    differences = grpc_ms - in_process
    split: dict[str, float] = {}
    if all(p.server_rpc_s is not None for p in timed):
        in_process_steps = ms(p.in_process_steps_s for p in timed)
        server_rpc = ms(p.server_rpc_s for p in timed)
        server_steps = ms(p.server_steps_s for p in timed)
        outside = (grpc_ms - server_steps) - (in_process - in_process_steps)
        split = {
            "outside_steps_p50_ms": float(np.median(outside)),
            "transport_p50_ms": float(np.median(grpc_ms - server_rpc)),
            "step_time_difference_p50_ms": float(np.median(server_steps - in_process_steps)),
        }
    return Overhead(
        pairs=len(timed),
        in_process_p50_ms=float(np.median(in_process)),
        grpc_p50_ms=float(np.median(grpc_ms)),
        overhead_p50_ms=float(np.median(differences)),
        overhead_p95_ms=float(np.percentile(differences, 95)),
        **split,
    )
