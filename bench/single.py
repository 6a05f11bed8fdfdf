"""One request at a time (W1): attnserve's engine against the ways one would otherwise run it.

Variants, timed in rotation on the same requests so that drift of a shared machine falls on all:
  - `generate()`: transformers in PyTorch on the checkpoint (baseline (a) of docs/benchmarks.md);
  - one entry per exported model directory given (e.g. the fp32 and the int8 export), run by the
    engine in-process (the server adds its overhead, measured apart by `bench overhead`);
  - optionally `optimum`: Optimum's ORTModelForSeq2SeqLM in its side environment
    (bench/optimum_side.py).
Each variant's tokens are compared with generate()'s, position by position.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.reference import generate_runner
from bench.workload import BenchRequest
from export.precision import token_agreement
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.manifest import ModelManifest
from service.runtime.model import LoadedModel
from service.runtime.tokenizer import TextTokenizer

GENERATE = "generate()"
OPTIMUM = "optimum"
Timed = tuple[float, list[int]]  # seconds, generated tokens


@dataclass(frozen=True)
class SingleRequestResult:
    repeats: int
    median_s: dict[str, float]  # per variant
    vs_generate: dict[str, float]  # median of the per-round ratios variant / generate()
    token_agreement: dict[str, float]  # share of positions with generate()'s token


def _engine_variant(model_dir: Path) -> Callable[[BenchRequest], Timed]:
    served = ServedModel(LoadedModel.load(model_dir), EngineConfig())

    def run(request: BenchRequest) -> Timed:
        started = time.perf_counter()
        (result,) = run_to_completion(
            served, [request.payload], [GenerationParams(**request.params)]
        )
        return time.perf_counter() - started, result.token_ids

    return run


class OptimumVariant:
    """Optimum in its own interpreter (side environment), asked one request at a time."""

    def __init__(self, python: str, checkpoint: Path, model_dir: Path, new_tokens: int) -> None:
        manifest = ModelManifest.load(model_dir)
        self._tokenizer = TextTokenizer(
            model_dir / manifest.tokenizer_file, manifest.max_input_tokens
        )
        script = Path(__file__).with_name("optimum_side.py")
        self._process = subprocess.Popen(
            [
                python,
                "-I",
                str(script),
                str(checkpoint),
                str(new_tokens),
            ],  # -I: no bench/ on sys.path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if not json.loads(self._read()).get("ready"):
            raise RuntimeError("the Optimum side process did not start")

    def _read(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Optimum side process exited ({self._process.wait()})")
        return line

    def __call__(self, request: BenchRequest) -> Timed:
        assert self._process.stdin is not None and isinstance(request.payload, str)
        ids = self._tokenizer.encode(request.payload).tolist()
        self._process.stdin.write(json.dumps(ids) + "\n")
        self._process.stdin.flush()
        answer = json.loads(self._read())
        return answer["seconds"], answer["tokens"]

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)


def measure_single_requests(
    checkpoint: Path,
    model_dirs: dict[str, Path],
    requests: list[BenchRequest],
    repeats: int,
    optimum_python: str | None = None,
) -> SingleRequestResult:
    """Time each variant on requests[i % len] for `repeats` rounds, after one warm-up round.
    The first model directory provides the tokenizer the baselines use."""
    first_dir = next(iter(model_dirs.values()))
    generate = generate_runner(checkpoint, first_dir)

    def run_generate(request: BenchRequest) -> Timed:
        timed = generate(request)
        return timed.seconds, list(timed.tokens)

    variants: dict[str, Callable[[BenchRequest], Timed]] = {GENERATE: run_generate}
    variants |= {name: _engine_variant(path) for name, path in model_dirs.items()}
    optimum = None
    if optimum_python:
        new_tokens = int(requests[0].params["max_new_tokens"])
        optimum = OptimumVariant(optimum_python, checkpoint, first_dir, new_tokens)
        variants[OPTIMUM] = optimum
    try:
        times: dict[str, list[float]] = {name: [] for name in variants}
        tokens: dict[str, list[list[int]]] = {name: [] for name in variants}
        for round_index in range(repeats + 1):
            request = requests[round_index % len(requests)]
            for name, run in variants.items():
                seconds, generated = run(request)
                if round_index:  # round 0 warms every variant up
                    times[name].append(seconds)
                    tokens[name].append(generated)
    finally:
        if optimum is not None:
            optimum.close()
    base = np.array(times[GENERATE])
    return SingleRequestResult(
        repeats=repeats,
        median_s={name: float(np.median(values)) for name, values in times.items()},
        vs_generate={name: float(np.median(np.array(v) / base)) for name, v in times.items()},
        token_agreement={
            name: token_agreement(tokens[GENERATE], generated)["greedy_token_agreement"]
            for name, generated in tokens.items()
        },
    )


def single_table(result: SingleRequestResult) -> str:
    lines = [
        "| variant | median s | / generate() | tokens equal to generate()'s |",
        "|---|---|---|---|",
    ]
    for name, seconds in result.median_s.items():
        lines.append(
            f"| {name} | {seconds:.3f} | {result.vs_generate[name]:.2f} | "
            f"{result.token_agreement[name]:.1%} |"
        )
    return "\n".join(lines)


def to_dict(result: SingleRequestResult) -> dict:
    return asdict(result)
