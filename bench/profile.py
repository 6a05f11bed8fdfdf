"""Where one request's time goes, in-process on the CPU: the encoder and decoder runs inside
ONNX Runtime, the Python step loop around them, and ONNX Runtime's own per-operator split.

The sessions are the server's (`session_options`) with ONNX Runtime's profiler on; its JSON trace
gives each run's duration (`model_run`) and each kernel's. The request is run `repeats` times after
one warm-up; the split is the median over the repeats, kernel times their mean. The profiler
itself adds a little to every kernel, so the totals are a few percent above an unprofiled run.
The last repeat's steps are also counted (bench/step_costs.py): bytes across, K/V buffers
created and session runs per step.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.step_costs import step_costs
from bench.workload import BenchRequest
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel
from service.runtime.sessions import create_session, session_options

TOP = 8  # operator types and nodes listed per graph


@dataclass(frozen=True)
class RequestProfile:
    total_ms: float
    encoder_ms: float  # ONNX Runtime's run of the encoder (its `model_run` events)
    decoder_ms: float  # all decoder runs of the request
    decoder_runs: int
    python_ms: float  # the rest: tokenization, the step loop, logits processing, K/V handling
    encoder_ops_ms: dict[str, float]  # kernel time by operator type, top TOP
    decoder_ops_ms: dict[str, float]
    decoder_nodes_ms: dict[str, float]  # kernel time of the heaviest decoder nodes, top TOP
    steps: dict[str, Any]  # the last repeat's step costs (bench.step_costs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _profiled(model_dir: Path, file: str, prefix: Path):
    options = session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    return create_session(model_dir / file, "cpu", options=options)


def profile_request(
    model_dir: Path, request: BenchRequest, repeats: int, trace_dir: Path
) -> RequestProfile:
    """Run `request` 1 + `repeats` times through the engine in-process; ONNX Runtime's traces
    are written under `trace_dir`."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    model = LoadedModel.load(model_dir)
    manifest = model.manifest
    model.encoder = _profiled(model_dir, manifest.encoder.file, trace_dir / "encoder")
    model.decoder = _profiled(model_dir, manifest.decoder.file, trace_dir / "decoder")
    served = ServedModel(model, EngineConfig())
    params = GenerationParams(**request.params)
    totals = []
    for attempt in range(repeats + 1):
        step_seconds, step_counters = [], []
        started = time.perf_counter()
        run_to_completion(served, [request.payload], [params], step_seconds, step_counters)
        if attempt:  # the first run is a warm-up
            totals.append((time.perf_counter() - started) * 1000)
    encoder = _Trace(Path(model.encoder.end_profiling()), repeats + 1)
    decoder = _Trace(Path(model.decoder.end_profiling()), repeats + 1)
    encoder_ms, decoder_ms = encoder.run_ms(), decoder.run_ms()
    python_ms = [t - e - d for t, e, d in zip(totals, encoder_ms, decoder_ms, strict=True)]
    median = lambda values: float(np.median(values))  # noqa: E731
    return RequestProfile(
        total_ms=median(totals),
        encoder_ms=median(encoder_ms),
        decoder_ms=median(decoder_ms),
        decoder_runs=decoder.runs_per_request,
        python_ms=median(python_ms),
        encoder_ops_ms=encoder.kernels(by_type=True),
        decoder_ops_ms=decoder.kernels(by_type=True),
        decoder_nodes_ms=decoder.kernels(by_type=False),
        steps=step_costs(step_counters, step_seconds),
    )


class _Trace:
    """One session's profiler trace over `requests` identical requests, the first a warm-up."""

    def __init__(self, path: Path, requests: int) -> None:
        events = json.loads(path.read_text())
        runs = [e for e in events if e.get("name") == "model_run"]
        if not runs or len(runs) % requests:
            raise RuntimeError(f"{path}: {len(runs)} runs do not split into {requests} requests")
        self.runs_per_request = len(runs) // requests
        self._timed_runs = [
            runs[i : i + self.runs_per_request]
            for i in range(self.runs_per_request, len(runs), self.runs_per_request)
        ]
        first_timed = self._timed_runs[0][0]["ts"]
        self._kernels = [
            e
            for e in events
            if e.get("cat") == "Node"
            and e["name"].endswith("_kernel_time")
            and e["ts"] >= first_timed
        ]

    def run_ms(self) -> list[float]:
        """Each timed request's milliseconds inside ONNX Runtime runs of this session."""
        return [sum(e["dur"] for e in runs) / 1000 for runs in self._timed_runs]

    def kernels(self, by_type: bool) -> dict[str, float]:
        """Kernel milliseconds per request (mean over the timed ones), heaviest TOP first."""
        totals: Counter[str] = Counter()
        for e in self._kernels:
            key = e["args"]["op_name"] if by_type else e["name"].removesuffix("_kernel_time")
            totals[key] += e["dur"]
        requests = len(self._timed_runs)
        return {k: round(v / 1000 / requests, 2) for k, v in totals.most_common(TOP)}


def profile_markdown(profile: RequestProfile) -> str:
    """The split as a table, and the heaviest operators and decoder nodes."""
    p = profile
    rows = [
        ("encoder (ONNX Runtime)", p.encoder_ms),
        (f"decoder, {p.decoder_runs} runs (ONNX Runtime)", p.decoder_ms),
        ("Python: tokenization, step loop, logits, K/V", p.python_ms),
        ("total", p.total_ms),
    ]
    lines = ["| part | ms | share |", "| --- | --- | --- |"]
    lines += [f"| {name} | {ms:,.1f} | {ms / p.total_ms:.1%} |" for name, ms in rows]
    step = p.steps["decode_step_median"]
    lines.append(
        f"\ndecode step (median of {p.steps['steps'] - 1}): "
        f"{step['device_to_host_bytes']:,.0f} B to the host, "
        f"{step['host_to_device_bytes']:,.0f} B from it, "
        f"{step['kv_allocations']:.0f} K/V buffers created, {step['session_runs']:.0f} runs, "
        f"{step['host_ms']:.2f} of {step['step_ms']:.2f} ms outside ONNX Runtime"
    )
    for title, ops in (
        ("encoder kernels by operator", p.encoder_ops_ms),
        ("decoder kernels by operator", p.decoder_ops_ms),
        ("heaviest decoder nodes", p.decoder_nodes_ms),
    ):
        lines.append(
            f"\n{title} (ms per request): " + ", ".join(f"{k} {v}" for k, v in ops.items())
        )
    return "\n".join(lines)
