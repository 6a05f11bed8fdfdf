"""What per-token attribution (GenerationParams.explain) costs, measured in-process.

Three ways to run the same requests through the same scheduler and runner, timed in rotation so
that drift of a shared machine falls on all three:
  - `without output`: the decoder with its cross_attention output cut off, i.e. the graph an
    export without attribution would give (the baseline);
  - `explain off`: the decoder as exported, requests without the flag (the output is not fetched);
  - `explain on`: the same decoder, every request with the flag (top-5 words per token).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx.utils import Extractor

from bench.workload import WorkloadSpec, make_requests
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.manifest import MANIFEST_FILE, ModelManifest
from service.runtime.model import LoadedModel

VARIANTS = ("without output", "explain off", "explain on")


@dataclass(frozen=True)
class ExplainCost:
    concurrent: int  # requests run together (one decode batch)
    repeats: int
    median_s: dict[str, float]  # per variant
    off_vs_without: float  # median of paired ratios: the cost of having the output, unused
    on_vs_without: float  # the cost of asking for it


def strip_attention_output(model_dir: Path, out_dir: Path) -> Path:
    """A copy of the model whose decoder graph ends before cross_attention (and whose manifest
    says so), as an export without attribution would be."""
    manifest = ModelManifest.load(model_dir)
    if manifest.cross_attention is None:
        raise ValueError(f"{model_dir} was exported without cross-attention weights")
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("decoder.onnx*"))
    decoder = onnx.load(str(model_dir / manifest.decoder.file))
    outputs = [name for name in manifest.decoder.outputs if name != manifest.cross_attention.output]
    stripped = Extractor(decoder).extract_model(list(manifest.decoder.inputs), outputs)
    onnx.save(
        stripped,
        str(out_dir / manifest.decoder.file),
        save_as_external_data=True,
        location=manifest.decoder.file + ".data",
    )
    manifest.decoder.outputs = outputs
    manifest.cross_attention = None
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json() + "\n")
    return out_dir


def measure_explain_cost(
    model_dir: Path, spec: WorkloadSpec, concurrent: int, repeats: int, threads: int = 0
) -> ExplainCost:
    """Time `concurrent` requests of `spec` (run together) `repeats` times per variant."""
    requests = make_requests(spec, concurrent)
    payloads = [request.payload for request in requests]
    forced = [GenerationParams(**request.params) for request in requests]
    config = EngineConfig(max_queue=max(concurrent, 1), intra_op_threads=threads)
    with tempfile.TemporaryDirectory(prefix="explain-cost-") as tmp:
        baseline_dir = strip_attention_output(model_dir, Path(tmp) / "without-output")
        runs = {
            "without output": (ServedModel(LoadedModel.load(baseline_dir), config), forced),
            "explain off": (ServedModel(LoadedModel.load(model_dir), config), forced),
        }
        explained = [replace(params, explain=True) for params in forced]
        runs["explain on"] = (runs["explain off"][0], explained)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for served, params in runs.values():  # warm-up
            run_to_completion(served, payloads, params)
        for _ in range(repeats):
            for name, (served, params) in runs.items():
                started = time.perf_counter()
                run_to_completion(served, payloads, params)
                times[name].append(time.perf_counter() - started)
    base = np.array(times["without output"])
    return ExplainCost(
        concurrent=concurrent,
        repeats=repeats,
        median_s={name: float(np.median(values)) for name, values in times.items()},
        off_vs_without=float(np.median(np.array(times["explain off"]) / base)),
        on_vs_without=float(np.median(np.array(times["explain on"]) / base)),
    )


def explain_cost_table(results: list[ExplainCost]) -> str:
    """A markdown table of the results, one row per concurrency."""
    lines = [
        "| concurrent requests | without output s | explain off s | explain on s | "
        "off / without | on / without |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        medians = " | ".join(f"{result.median_s[name]:.3f}" for name in VARIANTS)
        lines.append(
            f"| {result.concurrent} | {medians} | {result.off_vs_without:.3f} | "
            f"{result.on_vs_without:.3f} |"
        )
    return "\n".join(lines)


def to_dict(result: ExplainCost) -> dict:
    return asdict(result)
