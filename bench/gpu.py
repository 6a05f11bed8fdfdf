"""The GPU benchmark: W1 and a W3-like batch through the in-process engine on CUDA (IOBinding,
K/V kept on the device) in fp32 and fp16, the decode step at batch 1 against the memory-bandwidth
floor, and transformers.generate() on the same GPU. Each engine figure comes with its steps'
runtime counts (bench/step_costs.py: bytes across the bus, K/V buffers created, session runs,
host milliseconds per step), which say why a step costs what it does.

    python -m bench.gpu prepare --out DIR   # build + export bart-base (CPU work)
    python -m bench.gpu measure --out DIR --json result.json

`prepare` needs no GPU and can run while the GPU build of ONNX Runtime is still being unpacked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.models import checkpoint_dir, exported_model
from bench.reference import generate_one_at_a_time
from bench.stats import Percentiles
from bench.step_costs import step_costs
from bench.workload import WORKLOADS, BenchRequest, make_requests
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.manifest import ModelManifest
from service.runtime.model import LoadedModel
from service.runtime.step_counters import StepCounters

MODEL = "bart-base"  # --model bart-tiny --device cpu: a dry run of the script without a GPU
HBM_BYTES_PER_S = 3.0e12  # device-to-device copy measured on this H100 kind (KINDS.md)
W1_REPEATS, W3_REQUESTS, W3_BATCH1_REQUESTS, GENERATE_W3_REQUESTS = 5, 64, 16, 16


def fp16_dir(out: Path, model: str) -> Path:
    return out / "served-fp16" / f"{model}-fp16"


def prepare(out: Path, model: str) -> None:
    """Export bart-base in fp32 (with the parity checks) and convert that export to fp16."""
    from export.precision import convert_graphs

    fp32 = exported_model(out, model)
    target = fp16_dir(out, model)
    if (target / "model.json").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    manifest = ModelManifest.load(fp32)
    convert_graphs(fp32, target, "fp16", manifest.architecture)
    for artifact in fp32.glob("*.json"):
        shutil.copyfile(artifact, target / artifact.name)
    manifest.dtype, manifest.name = "fp16", target.name
    manifest.save(target)


def _weight_bytes_read_per_step(decoder_file: Path) -> int:
    """Bytes of the decoder's initializers, less tables only gathered from (an embedding row is
    read per token, not the table)."""
    graph = onnx.load(str(decoder_file), load_external_data=False).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    total = 0
    for tensor in graph.initializer:
        if consumers.get(tensor.name) == {"Gather"}:
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


def _step_times(
    served: ServedModel, request: BenchRequest
) -> tuple[list[float], list[StepCounters]]:
    """Seconds and runtime counts of each engine step of one request alone (the first one
    runs the encoder)."""
    seconds: list[float] = []
    counters: list[StepCounters] = []
    params = [GenerationParams(**request.params)]
    run_to_completion(served, [request.payload], params, seconds, counters)
    return seconds, counters


def _timed_batch(served: ServedModel, requests: list[BenchRequest]) -> dict[str, Any]:
    params = [GenerationParams(**r.params) for r in requests]
    step_seconds: list[float] = []
    counters: list[StepCounters] = []
    started = time.perf_counter()
    payloads = [r.payload for r in requests]
    results = run_to_completion(served, payloads, params, step_seconds, counters)
    seconds = time.perf_counter() - started
    tokens = sum(r.output_tokens for r in results)
    return {
        "requests": len(requests),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "step_costs": step_costs(counters, step_seconds),
    }


def _host_argmax_steps(model: LoadedModel, w1: BenchRequest) -> dict[str, Any]:
    """W1's step costs with every row's logits on the host (--device-argmax off), beside the
    default's in the same run."""
    config = EngineConfig(model.device, max_batch_rows=1, max_num_beams=1, device_argmax="off")
    served = ServedModel(model, config)
    _step_times(served, w1)  # warm-up
    seconds, counters = _step_times(served, w1)
    return step_costs(counters, seconds)


def _measure_engine(model_dir: Path, device: str) -> dict[str, Any]:
    model = LoadedModel.load(model_dir, device)
    w1 = make_requests(WORKLOADS["W1"], 1)[0]
    single = ServedModel(model, EngineConfig(device=device, max_batch_rows=1, max_num_beams=1))
    for _ in range(2):
        _step_times(single, w1)  # warm-up: CUDA kernels, allocator
    timed = [_step_times(single, w1) for _ in range(W1_REPEATS)]
    runs = [seconds for seconds, _ in timed]
    steps = np.concatenate([r[1:] for r in runs])
    mean_past = w1.new_tokens / 2 + 1
    kv_bytes = model.kv_bytes_per_position * (mean_past + 512)
    weights = _weight_bytes_read_per_step(model_dir / model.manifest.decoder.file)
    w3 = make_requests(WORKLOADS["W3"], W3_REQUESTS)
    batched = ServedModel(model, EngineConfig(device=device, max_batch_rows=32))
    _timed_batch(batched, w3[:8])  # warm-up at larger shapes
    return {
        "provider": model.provider,
        "w1_latency_ms": asdict(Percentiles.of([sum(r) for r in runs])),
        "w1_first_step_ms": float(np.median([r[0] for r in runs]) * 1000),
        "decode_step_batch1_ms": float(np.median(steps) * 1000),
        "w1_step_costs": step_costs(timed[-1][1], timed[-1][0]),
        "w1_host_argmax_step_costs": _host_argmax_steps(model, w1),
        "decode_step_floor_ms": (weights + kv_bytes) / HBM_BYTES_PER_S * 1000,
        "decoder_weight_bytes_per_step": weights,
        "kv_bytes_per_step": int(kv_bytes),
        "w3_batched_32": _timed_batch(batched, w3),
        "w3_batch_1": _timed_batch(single, w3[:W3_BATCH1_REQUESTS]),
    }


def _measure_generate(out: Path, model_dir: Path, device: str, fp16: bool) -> dict[str, Any]:
    checkpoint = checkpoint_dir(out, model_dir.name)
    w1 = make_requests(WORKLOADS["W1"], W1_REPEATS)
    timed = generate_one_at_a_time(checkpoint, model_dir, w1, 2, device, fp16)
    w3 = make_requests(WORKLOADS["W3"], GENERATE_W3_REQUESTS)
    timed_w3 = generate_one_at_a_time(checkpoint, model_dir, w3, 1, device, fp16)
    return {
        "w1_latency_ms": asdict(Percentiles.of([t.seconds for t in timed])),
        "w3_one_at_a_time_tokens_per_s": sum(t.new_tokens for t in timed_w3)
        / sum(t.seconds for t in timed_w3),
    }


def measure(out: Path, model: str, device: str) -> dict[str, Any]:
    import onnxruntime as ort
    import torch  # the GPU's name (CUDA's libraries: service.runtime.sessions.provider_for)

    fp32 = exported_model(out, model)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    result: dict[str, Any] = {
        "gpu": gpu,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "model": model,
    }
    for name, model_dir, fp16 in (("fp32", fp32, False), ("fp16", fp16_dir(out, model), True)):
        started = time.perf_counter()
        try:
            result[name] = {"engine": _measure_engine(model_dir, device)}
        except Exception as exc:  # report what failed and go on with the rest
            result[name] = {"engine_error": repr(exc)}
        result[name]["generate"] = _measure_generate(out, fp32, device, fp16)
        result[name]["seconds"] = time.perf_counter() - started
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=["prepare", "measure"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out, args.model)
        return
    result = measure(args.out, args.model, args.device)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
