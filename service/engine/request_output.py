"""Turns one request's StepEvents into what the client receives: TokenDeltas (detokenized
incrementally, with attributions for explain requests) and its GenerationResult.

A captioning prompt is part of the answer's text, as transformers' decode of generate()'s output
has it: the detokenizer starts from the prompt's tokens, and the prompt's text leads the first
delta (so the deltas still join to the unary text); token ids and counts are the generated ones.

Runs where the request's events are consumed, never on the step thread. See
docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.types import (
    Attribution,
    GenerationResult,
    RequestTiming,
    TokenAttribution,
    TokenDelta,
)
from service.runtime.tokenizer import IncrementalDetokenizer

if TYPE_CHECKING:
    from service.engine.served_model import ServedModel


class RequestOutput:
    """Turns one request's StepEvents into TokenDeltas and its GenerationResult."""

    def __init__(self, served: ServedModel, group: SequenceGroup) -> None:
        self._served = served
        self._group = group
        self._detokenizer = IncrementalDetokenizer(served.model.tokenizer)
        prompt = group.prompt_ids.tolist()
        self._prompt_text = self._detokenizer.push(prompt) if prompt else ""  # until sent
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
            text = self._unsent_prompt() + self._detokenizer.push(event.tokens)
            out.append(TokenDelta(text, list(event.tokens), self._attribute(event)))
        if event.finish_reason is None:
            return out
        if beam:  # the answer is only known at the end: one delta with all of it
            prompt = self._group.prompt_ids.tolist()
            text = self._served.model.tokenizer.decode(prompt + list(event.tokens))
            out.append(TokenDelta(text, list(event.tokens), self._attribute(event)))
        else:
            tail, text = self._detokenizer.finish()
            tail = self._unsent_prompt() + tail
            if tail:
                out.append(TokenDelta(tail, []))
        manifest = self._served.manifest
        out.append(
            GenerationResult(
                text=text,
                model=manifest.name,
                model_version=manifest.version,
                input_tokens=self._group.read_tokens,
                output_tokens=len(self._group.generated),
                finish_reason=event.finish_reason,
                token_ids=[int(t) for t in np.asarray(self._group.generated)],
                attribution=self._whole_attribution(),
                timing=self._timing(),
                truncated=self._group.truncated,
            )
        )
        return out

    def _unsent_prompt(self) -> str:
        """The prompt's text the first time (it leads the first delta), then nothing."""
        text, self._prompt_text = self._prompt_text, ""
        return text

    def _timing(self) -> RequestTiming | None:
        """The request's timing, once the serving engine's reporter stamped its steps."""
        group = self._group
        if group.admitted_at is None or group.finished_at is None:
            return None
        encoder_seconds = group.encoder_seconds or 0.0
        return RequestTiming(
            group.arrived_at, group.admitted_at, encoder_seconds, group.finished_at
        )

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
