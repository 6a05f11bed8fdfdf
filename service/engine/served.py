"""One served model: request preparation, its scheduler and runner, and output assembly.

Shared by the async Engine (which drives `step()` from its worker thread) and by
`generate_offline` (which drives it in a plain loop), so both go through the same path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from service.engine.attribution import (
    Attributor,
    ImageSource,
    SourceLayout,
    TextSource,
    describe_reduction,
)
from service.engine.config import EngineConfig
from service.engine.runner import ModelRunner
from service.engine.scheduler import Scheduler, SequenceGroup, StepEvent
from service.engine.types import (
    Attribution,
    GenerationParams,
    GenerationResult,
    TokenAttribution,
    TokenDelta,
)
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
            explainable=self.model.explainable,
        )
        source: SourceLayout | None = None
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
            if resolved.explain:
                source = self._image_source()
        else:
            encoded = self.model.tokenizer.encode_with_offsets(text or "")
            feeds = {"input_ids": encoded.ids[None, :]}
            input_tokens = encoder_length = int(encoded.ids.size)
            if resolved.explain:
                source = TextSource.from_encoding(
                    text or "", encoded, resolved.explain_top_k, resolved.explain_full
                )
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
            explain_source=source,
        )

    def _image_source(self) -> ImageSource:
        spec = self.manifest.cross_attention
        assert spec is not None and spec.patch_grid is not None  # checked by the manifest
        rows, cols = spec.patch_grid
        return ImageSource(rows=rows, cols=cols, prefix=spec.source_prefix)

    def attributor(self, source: SourceLayout) -> Attributor:
        spec = self.manifest.cross_attention
        assert spec is not None  # requests only ask for explain on models that have it
        reduction = describe_reduction(spec, self.manifest.dims.num_layers)
        return Attributor(source, reduction, self.model.tokenizer.token_text)

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
        source = group.explain_source
        self._attributor = served.attributor(source) if source is not None else None
        self._attributions: list[TokenAttribution] = []
        self._header: Attribution | None = None  # the first attribution: source described

    def feed(self, event: StepEvent) -> list[TokenDelta | GenerationResult]:
        """The outputs this event produces; raises the request's error if it failed."""
        if event.error is not None:
            raise event.error
        out: list[TokenDelta | GenerationResult] = []
        beam = self._group.beam is not None
        if event.tokens and not beam:
            text = self._detokenizer.push(event.tokens)
            out.append(TokenDelta(text, list(event.tokens), self._attribute(event)))
        if event.finish_reason is None:
            return out
        if beam:  # the answer is only known at the end: one delta with all of it
            text = self._served.model.tokenizer.decode(event.tokens)
            out.append(TokenDelta(text, list(event.tokens), self._attribute(event)))
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
                attribution=self._whole_attribution(),
            )
        )
        return out

    def _attribute(self, event: StepEvent) -> Attribution | None:
        """The attribution of the event's tokens (explain requests); kept for the result."""
        if self._attributor is None:
            return None
        if event.attention is None:
            raise RuntimeError("an explain request's step came without cross-attention")
        attribution = self._attributor.attribute(event.tokens, event.attention)
        if self._header is None:  # the first carries the source description: keep it
            self._header = attribution
        self._attributions.extend(attribution.tokens)
        return attribution

    def _whole_attribution(self) -> Attribution | None:
        if self._header is None:
            return None
        return replace(self._header, tokens=list(self._attributions))
