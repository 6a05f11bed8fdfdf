"""Plain request and result types shared by the transport, the scheduler and the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.runtime.tasks import Task


@dataclass
class GenerationParams:
    """Per-request generation settings; None means "the model's generation default"."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    length_penalty: float | None = None
    seed: int | None = None
    explain: bool | None = None  # return per-token cross-attention attribution
    explain_top_k: int | None = None  # text: source words per token
    explain_full: bool | None = None  # text: also the full distribution over source tokens
    truncate: int | None = None  # text: keep the first N tokens of a too-long input; 0 = refuse


@dataclass
class GenerationRequest:
    """One client request as the engine sees it: already validated at the transport."""

    model: str  # model name; "" = the default model of the task
    task: Task
    text: str | None = None
    image: bytes | None = None
    prompt: str | None = None  # captioning: the text the caption continues; None or "" = none
    params: GenerationParams = field(default_factory=GenerationParams)
    version: str = ""  # "" = the serving version
    deadline: float | None = None  # time.monotonic() seconds; None = no deadline


@dataclass
class SourceSpan:
    """Characters [start, end) of the request's text, and an attention weight on them."""

    start: int
    end: int
    text: str
    weight: float = 0.0


@dataclass
class TokenAttribution:
    """Where one generated token's cross-attention went over the source."""

    token_id: int
    token_text: str
    top_spans: list[SourceSpan]  # text models: the most attended source words, best first
    weights: list[float]  # text with explain_full: per source token; images: per patch, row-major


@dataclass
class Attribution:
    """Per-token attribution of (part of) an answer; the header fields describe the source."""

    reduction: str
    tokens: list[TokenAttribution]
    grid_rows: int = 0  # image models: the encoder's patch grid
    grid_cols: int = 0
    source_tokens: list[SourceSpan] = field(default_factory=list)  # text with explain_full


@dataclass
class TokenDelta:
    """Streamed text produced since the previous delta (may be empty for partial characters)."""

    text: str
    token_ids: list[int]
    attribution: Attribution | None = None  # with explain: the attribution of token_ids


@dataclass
class RequestTiming:
    """Where one request's time went, on time.monotonic()'s clock (for traces: the transport
    turns these into spans after the fact, so the step thread never touches a tracer)."""

    arrived_at: float  # queued
    admitted_at: float  # joined the decode batch; its encoder ran in that step
    encoder_seconds: float  # that step's encoder run (for the batch it was admitted with)
    finished_at: float  # the end of its last step


@dataclass
class GenerationResult:
    """The final answer for one request."""

    text: str
    model: str
    model_version: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "eos" or "length"
    truncated: bool = False  # the input was cut to input_tokens (GenerationParams.truncate)
    token_ids: list[int] = field(default_factory=list)
    attribution: Attribution | None = None  # with explain: every generated token's attribution
    timing: RequestTiming | None = None  # set by the serving engine, not the offline driver
