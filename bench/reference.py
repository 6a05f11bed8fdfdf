"""Baseline (a): `transformers.generate()` in PyTorch, one request at a time, as a naive service
would run it. The inputs are prepared by attnserve's own tokenizer and image preprocessing from
the exported model directory, so both sides see the same token ids and pixels.

torch is imported here only, inside the function: nothing else in the benchmark needs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.workload import BenchRequest
from service.runtime.images import load_pixel_values
from service.runtime.manifest import ModelManifest
from service.runtime.tasks import Task
from service.runtime.tokenizer import TextTokenizer

_NO_LIMIT = 1 << 40


@dataclass(frozen=True)
class TimedGeneration:
    seconds: float
    new_tokens: int
    tokens: tuple[int, ...] = ()  # the generated ids (decoder start and prompt excluded)


def generate_runner(
    checkpoint: Path, model_dir: Path, device: str = "cpu", fp16: bool = False
) -> Callable[[BenchRequest], TimedGeneration]:
    """Load the checkpoint once; the returned function times preprocessing + `generate()`
    (greedy, forced length) of one request."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM

    manifest = ModelManifest.load(model_dir)
    captioning = manifest.task == Task.CAPTIONING
    loader = AutoModelForImageTextToText if captioning else AutoModelForSeq2SeqLM
    dtype = torch.float16 if fp16 else torch.float32
    model = loader.from_pretrained(checkpoint, dtype=dtype).to(device).eval()
    tokenizer = TextTokenizer(model_dir / manifest.tokenizer_file, manifest.max_input_tokens)

    def inputs(request: BenchRequest) -> dict[str, torch.Tensor]:
        if captioning:
            assert manifest.image is not None and isinstance(request.payload, bytes)
            pixels = load_pixel_values(request.payload, manifest.image, _NO_LIMIT, _NO_LIMIT)
            return {"pixel_values": torch.from_numpy(pixels).to(device, dtype)}
        assert isinstance(request.payload, str)
        ids = torch.from_numpy(tokenizer.encode(request.payload)[None, :]).to(device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def run(request: BenchRequest) -> TimedGeneration:
        started = time.perf_counter()
        feeds = inputs(request)  # timed: a service tokenizes each request too
        with torch.inference_mode():
            out = model.generate(**feeds, **request.params, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        prompt = 1 + len(manifest.decoder_prompt)  # decoder start (+ prompt) come back too
        return TimedGeneration(seconds, int(out.shape[1]) - prompt, tuple(out[0, prompt:].tolist()))

    return run


def generate_one_at_a_time(
    checkpoint: Path,
    model_dir: Path,
    requests: list[BenchRequest],
    warmup: int = 1,
    device: str = "cpu",
    fp16: bool = False,
) -> list[TimedGeneration]:
    """Time each request in turn with `generate_runner`, after `warmup` untimed ones."""
    run = generate_runner(checkpoint, model_dir, device, fp16)
    for request in requests[:warmup]:
        run(request)
    return [run(request) for request in requests]
