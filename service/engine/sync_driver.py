"""The synchronous driver: in-process generation through the same three step stages as the
server (ServedModel.step: plan -> execute -> update), without threads or transport.

Used by export parity checks and benchmarks: every input is queued at once and the step loop
runs until all are answered, so the inputs batch continuously exactly as they would when served.
"""

from __future__ import annotations

import time
from pathlib import Path

from service.engine.config import EngineConfig
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.served_model import ServedModel
from service.engine.types import GenerationParams, GenerationResult
from service.runtime.model import LoadedModel
from service.runtime.step_counters import StepCounters


def generate_offline(
    model_dir: Path,
    inputs: list[str | bytes],
    params: GenerationParams | list[GenerationParams] | None = None,
    config: EngineConfig | None = None,
) -> list[GenerationResult]:
    """One GenerationResult per input (str = text to summarize, bytes = image to caption)."""
    config = config or EngineConfig(max_queue=max(len(inputs), 1))
    config.validate()
    per_input = params if isinstance(params, list) else [params or GenerationParams()] * len(inputs)
    if len(per_input) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(per_input)} GenerationParams")
    model = LoadedModel.load(model_dir, config.device, config.session_threads())
    served = ServedModel(model, config)
    return run_to_completion(served, inputs, per_input)


def run_to_completion(
    served: ServedModel,
    inputs: list[str | bytes],
    params: list[GenerationParams],
    step_seconds: list[float] | None = None,
    step_counters: list[StepCounters] | None = None,
    prompts: list[str | None] | None = None,
) -> list[GenerationResult]:
    """Queue every input on `served` and step until each has its result; each step's duration
    is appended to `step_seconds` and its runtime counts to `step_counters` if given
    (benchmarks set them beside the server's step metrics). `prompts`: captioning, each image's
    prompt (None = none)."""
    events: dict[int, list[StepEvent]] = {}
    groups: list[SequenceGroup] = []
    prompts = prompts or [None] * len(inputs)
    for index, (item, item_params, prompt) in enumerate(zip(inputs, params, prompts, strict=True)):
        text, image = (item, None) if isinstance(item, str) else (None, item)
        events[index] = []
        group = served.prepare(text, image, item_params, events[index].append, prompt=prompt)
        served.scheduler.add(group)
        groups.append(group)
    while served.scheduler.has_work():
        started = time.perf_counter()
        stepped = served.step()
        if step_seconds is not None:
            step_seconds.append(time.perf_counter() - started)
        counters = served.model.counters.take()
        if step_counters is not None:
            step_counters.append(counters)
        for group, event in stepped:
            group.emit(event)
    results = []
    for index, group in enumerate(groups):
        output = served.output(group)
        outputs = [item for event in events[index] for item in output.feed(event)]
        results.append(outputs[-1])
    return results
