"""One request inside the engine (`SequenceGroup`) and what a step produced for it (`StepEvent`).

A request's rows (one, or num_beams for beam search) sit next to each other in the decode batch;
the batch holds its requests in row order (service.engine.batch). See docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.engine.attribution import SourceLayout
from service.engine.beam_search import BeamSearchGroup
from service.engine.validation import ResolvedParams
from service.errors import ServeError


@dataclass
class StepEvent:
    """What one step produced for one request."""

    tokens: list[int]  # new tokens; for beam search the whole answer, once, when it ends
    finish_reason: str | None = None  # "eos" or "length" once the request is done
    error: ServeError | None = None  # the request ended without an answer
    attention: np.ndarray | None = None  # explain: float32 [len(tokens), S], one row per token


@dataclass(eq=False)
class SequenceGroup:
    """One request inside the engine: inputs, settings, decoding state and output channel."""

    params: ResolvedParams
    encoder_feeds: dict[str, np.ndarray]  # batch-of-one encoder inputs
    input_tokens: int
    emit: Callable[[StepEvent], None]
    deadline: float | None = None  # time.monotonic() seconds
    kv_reservation: int = 0  # peak K/V bytes of its rows, reserved while it runs
    generated: list[int] = field(default_factory=list)
    beam: BeamSearchGroup | None = None
    rng: np.random.Generator | None = None
    cancelled: bool = False  # set by the consumer's side; honoured at the next step
    arrived_at: float = field(default_factory=time.monotonic)  # queue wait and TTFT start here
    admitted_at: float | None = None  # when it joined the decode batch; None while waiting
    first_token_at: float | None = None
    encoder_seconds: float | None = None  # the encoder run of the step that admitted it
    finished_at: float | None = None  # the end of its last step
    last_token_at: float | None = None  # streams: the gap to the next token starts here
    explain_source: SourceLayout | None = None  # explain: how to read the source positions
    truncated: bool = False  # its text was cut to input_tokens (GenerationParams.truncate)
    # captioning: the request's prompt tokens, fed after the decoder start (int64)
    prompt_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def rows(self) -> int:
        return self.params.num_beams

    @property
    def read_tokens(self) -> int:
        """The tokens the request gave the model: its encoder input and its decoder prompt
        (what results and metrics report as input tokens)."""
        return self.input_tokens + int(self.prompt_ids.size)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def own_attention(self, attention: np.ndarray | None, rows: slice) -> np.ndarray | None:
        """Its rows of a step's cross-attention, cut to its own source length (the batch's
        encoder width changes as rows come and go), if it asked for explain."""
        if attention is None or not self.params.explain:
            return None
        return attention[rows, : self.input_tokens].copy()
