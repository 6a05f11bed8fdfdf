"""The documented benchmark: every baseline on the same model and requests, in one run.

Baselines: (a) transformers.generate() one request at a time in-process; (b) our server with
batching off (one decode row); (c) request-level (static) batching: new requests join only an
empty batch; (d) continuous batching. Server overhead compares gRPC with the in-process engine.
Each server configuration runs in its own `attnserve serve` process, started once per model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.driver import LoadDriver, LoadSpec
from bench.models import BENCH_MODELS, checkpoint_dir, exported_model
from bench.overhead import measure_overhead
from bench.reference import generate_one_at_a_time
from bench.report import machine_info
from bench.scrape import decode_batch_probe
from bench.server import attnserve_server
from bench.stats import Percentiles, summarize
from bench.workload import WORKLOADS, make_requests

REQUEST_POOL = 256  # distinct requests per workload, cycled by the load generator
SERVERS: dict[str, tuple[str, ...]] = {
    "(b) batch 1": ("--max-batch-rows", "1", "--max-num-beams", "1"),
    "(c) static": ("--admission", "static"),
    "(d) continuous": (),
}
BATCH_OFF, STATIC, CONTINUOUS = SERVERS


@dataclass(frozen=True)
class WorkloadPlan:
    workload: str
    servers: tuple[str, ...]
    levels: tuple[int, ...]  # closed-loop clients; 1 gives the single-request latency
    generate_requests: int  # requests timed with transformers.generate()


@dataclass(frozen=True)
class SuitePlan:
    name: str
    workloads: tuple[WorkloadPlan, ...]
    warmup_s: float
    duration_s: float
    overhead_workload: str
    overhead_pairs: int
    target_workloads: tuple[str, str]  # (single-request workload, mixed workload under load)


ALL = (BATCH_OFF, STATIC, CONTINUOUS)
PLANS = {
    "full": SuitePlan(
        "full",
        (
            WorkloadPlan("W1", (BATCH_OFF, CONTINUOUS), (1,), 5),
            WorkloadPlan("W3", ALL, (1, 4, 16, 32), 8),
            WorkloadPlan("W2", (BATCH_OFF, CONTINUOUS), (1, 16), 5),
            WorkloadPlan("W1-t5", (CONTINUOUS,), (1,), 5),
        ),
        warmup_s=8.0,
        duration_s=30.0,
        overhead_workload="W1",
        overhead_pairs=10,
        target_workloads=("W1", "W3"),
    ),
    "quick": SuitePlan(
        "quick",
        (WorkloadPlan("Q1", (BATCH_OFF, CONTINUOUS), (1,), 3), WorkloadPlan("Q3", ALL, (1, 8), 3)),
        warmup_s=1.0,
        duration_s=4.0,
        overhead_workload="Q1",
        overhead_pairs=5,
        target_workloads=("Q1", "Q3"),
    ),
}


def _reference(out_dir: Path, plan: WorkloadPlan, model_dir: Path) -> dict[str, Any]:
    spec = WORKLOADS[plan.workload]
    requests = make_requests(spec, plan.generate_requests)
    timed = generate_one_at_a_time(checkpoint_dir(out_dir, spec.model), model_dir, requests)
    seconds = [t.seconds for t in timed]
    return {
        "requests": len(timed),
        "latency_ms": asdict(Percentiles.of(seconds)),
        "tokens_per_s": sum(t.new_tokens for t in timed) / sum(seconds),
        "throughput_rps": len(timed) / sum(seconds),
        "mean_output_tokens": float(np.mean([t.new_tokens for t in timed])),
    }


def run_suite(plan: SuitePlan, out_dir: Path, progress: Callable[[str], None] = print) -> dict:
    """Run every workload of `plan` against every baseline; returns the JSON-ready result."""
    started = time.time()
    result: dict[str, Any] = {
        "suite": plan.name,
        "machine_before": machine_info(),
        "settings": {"warmup_s": plan.warmup_s, "duration_s": plan.duration_s},
        "models": {},
        "workloads": {},
    }
    by_model: dict[str, list[WorkloadPlan]] = {}
    for workload_plan in plan.workloads:
        by_model.setdefault(WORKLOADS[workload_plan.workload].model, []).append(workload_plan)

    for model, plans in by_model.items():
        progress(f"[{model}] building and exporting (cached after the first run)")
        model_dir = exported_model(out_dir, model, progress=lambda message: None)
        result["models"][model] = BENCH_MODELS[model].description
        for workload_plan in plans:
            progress(f"[{workload_plan.workload}] (a) transformers.generate(), one at a time")
            result["workloads"][workload_plan.workload] = {
                "spec": WORKLOADS[workload_plan.workload].to_dict(),
                "generate": _reference(out_dir, workload_plan, model_dir),
                "servers": {},
            }
        for server in SERVERS:
            users = [p for p in plans if server in p.servers]
            if users:
                _run_server(plan, server, model_dir, users, out_dir, result, progress)
    result["machine_after"] = machine_info()
    result["elapsed_s"] = time.time() - started
    result["targets"] = evaluate_targets(result, plan.target_workloads)
    return result


def _run_server(
    plan: SuitePlan,
    server: str,
    model_dir: Path,
    plans: list[WorkloadPlan],
    out_dir: Path,
    result: dict[str, Any],
    progress: Callable[[str], None],
) -> None:
    model = model_dir.name
    log = out_dir / "logs" / f"{model}-{server.split()[0].strip('()')}.log"
    with attnserve_server(model_dir.parent, log, *SERVERS[server]) as running:
        probe = decode_batch_probe(running.metrics_url, model)
        for workload_plan in plans:
            spec = WORKLOADS[workload_plan.workload]
            driver = LoadDriver(running.target, spec.task, model, make_requests(spec, REQUEST_POOL))
            results = []
            for level in workload_plan.levels:
                progress(f"[{spec.name}] {server}: {level} clients")
                load = LoadSpec("closed", level, plan.warmup_s, duration_s=plan.duration_s)
                results.append(summarize(asyncio.run(driver.run(load, probe))).to_dict())
            result["workloads"][spec.name]["servers"][server] = results
            if server == CONTINUOUS and spec.name == plan.overhead_workload:
                progress(f"[{spec.name}] server overhead: gRPC vs in-process engine")
                request = make_requests(spec, 1)[0]
                overhead = measure_overhead(
                    model_dir,
                    running.target,
                    request,
                    plan.overhead_pairs,
                    metrics_url=running.metrics_url,
                )
                result["overhead"] = {"workload": spec.name, **asdict(overhead)}


def _at(results: list[dict[str, Any]], level: int) -> dict[str, Any] | None:
    return next((r for r in results if r["level"] == level), None)


def _target(name: str, value: float | None, limit: float, higher_is_better: bool) -> dict:
    if value is None:
        return {"target": name, "value": None, "limit": limit, "met": None}
    met = value >= limit if higher_is_better else value <= limit
    return {"target": name, "value": value, "limit": limit, "met": met}


def evaluate_targets(result: dict[str, Any], workloads: tuple[str, str]) -> list[dict]:
    """The issue's targets, as ratios from this run."""
    single, mixed = (result["workloads"].get(w) for w in workloads)
    targets = []
    if single:
        ours = _at(single["servers"].get(CONTINUOUS, []), 1)
        ratio = (
            ours["latency_ms"]["p50"] / single["generate"]["latency_ms"]["p50"]
            if ours and ours["latency_ms"]["p50"] is not None
            else None
        )
        targets.append(
            _target(f"{workloads[0]} latency, (d) / generate()", ratio, 0.5, higher_is_better=False)
        )
    if mixed:
        servers = mixed["servers"]
        top = max((r["level"] for r in servers.get(CONTINUOUS, [])), default=0)
        ours, off = _at(servers.get(CONTINUOUS, []), top), _at(servers.get(BATCH_OFF, []), top)
        alone = _at(servers.get(CONTINUOUS, []), 1)
        speedup = ours["tokens_per_s"] / off["tokens_per_s"] if ours and off else None
        targets.append(
            _target(f"{workloads[1]} tokens/s at {top} clients, (d) / (b)", speedup, 6.0, True)
        )
        tail = (
            ours["latency_ms"]["p99"] / alone["latency_ms"]["p99"]
            if ours and alone and ours["latency_ms"]["p99"] and alone["latency_ms"]["p99"]
            else None
        )
        targets.append(
            _target(f"{workloads[1]} p99 at {top} clients / p99 at 1 client, (d)", tail, 3.0, False)
        )
    if "overhead" in result:
        overhead = result["overhead"]["overhead_p50_ms"]
        targets.append(_target("server overhead p50, ms", overhead, 2.0, higher_is_better=False))
    return targets
