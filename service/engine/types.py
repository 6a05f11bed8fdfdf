"""Plain request and result types shared by the transport, the scheduler and the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class GenerationRequest:
    """One client request as the engine sees it: already validated at the transport."""

    model: str  # model name; "" = the default model of the task
    task: str  # "summarization" or "captioning"
    text: str | None = None
    image: bytes | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    version: str = ""  # "" = the serving version
    deadline: float | None = None  # time.monotonic() seconds; None = no deadline


@dataclass
class TokenDelta:
    """Streamed text produced since the previous delta (may be empty for partial characters)."""

    text: str
    token_ids: list[int]


@dataclass
class GenerationResult:
    """The final answer for one request."""

    text: str
    model: str
    model_version: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "eos" or "length"
    token_ids: list[int] = field(default_factory=list)
