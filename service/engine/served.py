"""One served model: request preparation, its scheduler and runner, and output assembly.

Shared by the async Engine (which drives `step()` from its worker thread) and by
`generate_offline` (which drives it in a plain loop), so both go through the same path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.engine.config import EngineConfig
from service.engine.runner import ModelRunner
from service.engine.scheduler import Scheduler, SequenceGroup, StepEvent
from service.engine.types import GenerationParams, GenerationResult, TokenDelta
from service.engine.validation import resolve_params
from service.errors import InvalidArgument
from service.runtime.images import load_pixel_values
from service.runtime.model import LoadedModel
from service.runtime.tokenizer import IncrementalDetokenizer


@dataclass
class ModelInfo:
    name: str
    version: str
    task: str
    architecture: str
    dtype: str
    provider: str  # "CPUExecutionProvider" | "CUDAExecutionProvider"
    is_default: bool  # default model of its task
    max_input_tokens: int


class ServedModel:
    def __init__(self, model: LoadedModel, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        self.manifest = model.manifest
        self.scheduler = Scheduler(
            config.max_batch_rows,
            config.kv_budget_bytes,
            config.max_queue,
            static=config.admission == "static",
        )
        self.runner = ModelRunner(model)
        self.prompt_len = 1 + len(self.manifest.decoder_prompt)

    def info(self, is_default: bool) -> ModelInfo:
        m = self.manifest
        return ModelInfo(
            name=m.name,
            version=m.version,
            task=m.task,
            architecture=m.architecture,
            dtype=m.dtype,
            provider=self.model.provider,
            is_default=is_default,
            max_input_tokens=m.max_input_tokens,
        )

    def prepare(
        self,
        text: str | None,
        image: bytes | None,
        params: GenerationParams,
        emit: Callable[[StepEvent], None],
        deadline: float | None = None,
    ) -> SequenceGroup:
        """Validate and encode one request's input; InvalidArgument for anything wrong in it."""
        resolved = resolve_params(
            params,
            self.manifest.generation,
            self.config,
            self.prompt_len,
            self.manifest.max_decoder_positions,
        )
        if self.manifest.task == "captioning":
            if not image:
                raise InvalidArgument("image is empty")
            prep = self.manifest.image
            assert prep is not None  # the manifest guarantees it for captioning
            pixels = load_pixel_values(
                image, prep, self.config.max_image_pixels, self.config.max_image_bytes
            )
            feeds = {"pixel_values": pixels.astype(self.model.kv_dtype)}
            input_tokens = encoder_length = self.manifest.max_input_tokens
        else:
            ids = self.model.tokenizer.encode(text or "")
            feeds = {"input_ids": ids[None, :]}
            input_tokens = encoder_length = int(ids.size)
        reservation = (
            resolved.num_beams
            * (resolved.max_length + encoder_length)
            * self.model.kv_bytes_per_position
        )
        return SequenceGroup(
            params=resolved,
            encoder_feeds=feeds,
            input_tokens=input_tokens,
            emit=emit,
            deadline=deadline,
            kv_reservation=reservation,
        )

    def step(self, now: float | None = None) -> list[tuple[SequenceGroup, StepEvent]]:
        """Plan and run one step; finished requests leave the scheduler. Not thread-safe."""
        plan = self.scheduler.schedule(time.monotonic() if now is None else now)
        events = self.runner.execute(plan)
        for group, event in events:
            if event.finish_reason:
                self.scheduler.release(group)
        return events

    def reset(self) -> list[SequenceGroup]:
        """Forget every running request (after a runtime failure); returns them."""
        groups = list(self.scheduler.running)
        self.scheduler.running.clear()
        self.runner.batch = None
        self.runner.groups = []
        return groups

    def output(self, group: SequenceGroup) -> RequestOutput:
        return RequestOutput(self, group)


class RequestOutput:
    """Turns one request's StepEvents into TokenDeltas and its GenerationResult."""

    def __init__(self, served: ServedModel, group: SequenceGroup) -> None:
        self._served = served
        self._group = group
        self._detokenizer = IncrementalDetokenizer(served.model.tokenizer)

    def feed(self, event: StepEvent) -> list[TokenDelta | GenerationResult]:
        """The outputs this event produces; raises the request's error if it failed."""
        if event.error is not None:
            raise event.error
        out: list[TokenDelta | GenerationResult] = []
        beam = self._group.beam is not None
        if event.tokens and not beam:
            out.append(TokenDelta(self._detokenizer.push(event.tokens), list(event.tokens)))
        if event.finish_reason is None:
            return out
        if beam:  # the answer is only known at the end: one delta with all of it
            text = self._served.model.tokenizer.decode(event.tokens)
            out.append(TokenDelta(text, list(event.tokens)))
        else:
            tail, text = self._detokenizer.finish()
            if tail:
                out.append(TokenDelta(tail, []))
        manifest = self._served.manifest
        out.append(
            GenerationResult(
                text=text,
                model=manifest.name,
                model_version=manifest.version,
                input_tokens=self._group.input_tokens,
                output_tokens=len(self._group.generated),
                finish_reason=event.finish_reason,
                token_ids=[int(t) for t in np.asarray(self._group.generated)],
            )
        )
        return out
