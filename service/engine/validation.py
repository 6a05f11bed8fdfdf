"""Resolve a request's GenerationParams against the model's defaults and the server's caps.

The result is a fully resolved, immutable `ResolvedParams`: every later stage (scheduler,
decoding) reads plain values and never looks at defaults again. Lengths follow transformers'
meaning: `max_length` / `min_length` count the whole decoder sequence, decoder_start (and any
decoder prompt) included, because the logits processors are keyed on that length.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from service.engine.config import EngineConfig
from service.engine.types import GenerationParams
from service.errors import InvalidArgument
from service.runtime.manifest import (
    INT32_MAX,
    LENGTH_PENALTY_RANGE,
    MIN_SAMPLING_TEMPERATURE,
    REPETITION_PENALTY_RANGE,
    GenerationDefaults,
)

FLOAT32_MAX = 3.4028234663852886e38
# Integer settings become int64 numpy columns (RowParams) or slice bounds: anything a client
# can send is held to int32's range (INT32_MAX, as a manifest's integers), far above any
# meaningful value, so it can never overflow.
DEFAULT_EXPLAIN_TOP_K = 5
MAX_EXPLAIN_TOP_K = 64


@dataclass(frozen=True)
class ResolvedParams:
    """Generation settings of one request with nothing left to default."""

    # decoder tokens given before generation: decoder_start, the model's decoder prompt and the
    # request's prompt (captioning); forced, never chosen, and not counted as new tokens
    prompt_len: int
    max_length: int  # the sequence stops at this total length ("length")
    min_length: int  # EOS is suppressed while the total length is below this
    num_beams: int
    do_sample: bool
    temperature: float
    top_k: int  # 0 = off
    top_p: float  # 1.0 = off
    repetition_penalty: float  # 1.0 = off
    no_repeat_ngram_size: int  # 0 = off
    length_penalty: float
    early_stopping: bool | str  # True, False or "never" (transformers' meaning)
    forced_bos_token_id: int | None
    forced_eos_token_id: int | None
    seed: int
    explain: bool = False  # collect each generated token's cross-attention
    explain_top_k: int = DEFAULT_EXPLAIN_TOP_K
    explain_full: bool = False
    truncate: int = 0  # text inputs: keep the first N tokens of a too-long input; 0 = refuse

    @property
    def max_new_tokens(self) -> int:
        return self.max_length - self.prompt_len

    @classmethod
    def greedy(cls, max_length: int, min_length: int = 0) -> ResolvedParams:
        """Plain greedy decoding after the decoder start token, every other logits processor
        off: the baseline that benchmarks and tests vary one setting of."""
        return cls(
            prompt_len=1,
            max_length=max_length,
            min_length=min_length,
            num_beams=1,
            do_sample=False,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            length_penalty=1.0,
            early_stopping=False,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            seed=0,
        )


def _check_int(name: str, value: int, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidArgument(f"{name} must be {bound}, got {value}")
    return value


def _check_float(name: str, value: float) -> float:
    """Decoding runs in float32: a value float32 cannot hold would turn into inf there."""
    value = float(value)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise InvalidArgument(f"{name} must be a finite number (float32), got {value}")
    return value


def _check_range(name: str, value: float, low: float, high: float, why: str) -> float:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low:g} and {high:g}, got {value} ({why})")
    return value


def _resolve_beams_and_sampling(
    params: GenerationParams, defaults: GenerationDefaults, config: EngineConfig
) -> tuple[int, bool]:
    """Beam-sample is not supported: an explicit choice of one wins over the other's default."""
    if params.num_beams is not None:
        num_beams = _check_int("num_beams", params.num_beams, 1, config.max_num_beams)
    else:
        num_beams = min(max(defaults.num_beams, 1), config.max_num_beams)
    do_sample = bool(defaults.do_sample if params.do_sample is None else params.do_sample)
    if num_beams > 1 and do_sample:
        if params.num_beams is not None and params.do_sample:
            raise InvalidArgument(
                "do_sample=true with num_beams > 1 (beam sampling) is not supported: "
                "use num_beams=1 to sample or do_sample=false for beam search"
            )
        if params.do_sample:
            num_beams = 1  # the client asked to sample; the model's beam default gives way
        else:
            do_sample = False  # a beam request, or a model default of both: beam search
    return num_beams, do_sample


def _resolve_explain(params: GenerationParams, explainable: bool) -> tuple[bool, int, bool]:
    """(explain, top_k, full): the options only make sense with explain on a model that has
    cross-attention weights, and a request that asks otherwise is told so."""
    explain = bool(params.explain)
    if not explain:
        for name in ("explain_top_k", "explain_full"):
            if getattr(params, name) is not None:
                raise InvalidArgument(f"{name} needs explain=true")
        return False, DEFAULT_EXPLAIN_TOP_K, False
    if not explainable:
        raise InvalidArgument(
            "explain is not available for this model: it was exported without cross-attention "
            "weights (export it again with this attnserve version)"
        )
    top_k = DEFAULT_EXPLAIN_TOP_K
    if params.explain_top_k is not None:
        top_k = _check_int("explain_top_k", params.explain_top_k, 1, MAX_EXPLAIN_TOP_K)
    return True, top_k, bool(params.explain_full)


def resolve_params(
    params: GenerationParams,
    defaults: GenerationDefaults,
    config: EngineConfig,
    prompt_len: int = 1,
    max_decoder_positions: int | None = None,
    explainable: bool = False,
) -> ResolvedParams:
    """Fill every unset field from the model's defaults; InvalidArgument for out-of-range values.

    `max_decoder_positions` (the model's position table, prompt included) bounds the length: a
    request asking beyond it is refused, a model default beyond it is cut to fit, as generate()
    cuts its own default.
    """
    cap = config.max_new_tokens_cap
    if params.max_new_tokens is not None:
        max_new = _check_int("max_new_tokens", params.max_new_tokens, 1, cap)
        if max_decoder_positions is not None and prompt_len + max_new > max_decoder_positions:
            raise InvalidArgument(
                f"max_new_tokens ({max_new}) is more than this model can generate: its decoder "
                f"holds {max_decoder_positions} positions, {prompt_len} of them taken by the "
                f"decoder start and prompt tokens, so max_new_tokens must be <= "
                f"{max_decoder_positions - prompt_len}"
            )
    else:
        default_new = defaults.max_new_tokens or defaults.max_length - prompt_len
        if max_decoder_positions is not None:
            default_new = min(default_new, max_decoder_positions - prompt_len)
        max_new = min(max(default_new, 1), cap)

    if params.min_new_tokens is not None:
        min_new = _check_int("min_new_tokens", params.min_new_tokens, 0)
        if min_new > max_new:
            raise InvalidArgument(
                f"min_new_tokens ({min_new}) cannot exceed max_new_tokens ({max_new})"
            )
        min_length = prompt_len + min_new
    else:
        min_length = defaults.min_length

    num_beams, do_sample = _resolve_beams_and_sampling(params, defaults, config)

    def pick(value, default):
        return default if value is None else value

    temperature = _check_float("temperature", pick(params.temperature, defaults.temperature))
    if temperature < 0:
        raise InvalidArgument(f"temperature must be >= 0, got {temperature}")
    if do_sample and temperature < MIN_SAMPLING_TEMPERATURE:
        raise InvalidArgument(
            f"temperature must be > 0 (at least {MIN_SAMPLING_TEMPERATURE:g}) when sampling, got "
            f"{temperature} (for greedy decoding set do_sample=false)"
        )
    top_k = _check_int("top_k", pick(params.top_k, defaults.top_k), 0, INT32_MAX)
    top_p = _check_float("top_p", pick(params.top_p, defaults.top_p))
    if not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"top_p must be in (0, 1], got {top_p}")
    repetition_penalty = _check_float(
        "repetition_penalty", pick(params.repetition_penalty, defaults.repetition_penalty)
    )
    _check_range(
        "repetition_penalty",
        repetition_penalty,
        *REPETITION_PENALTY_RANGE,
        "it divides or multiplies the scores of tokens already generated",
    )
    no_repeat = _check_int(
        "no_repeat_ngram_size",
        pick(params.no_repeat_ngram_size, defaults.no_repeat_ngram_size),
        0,
        INT32_MAX,
    )
    length_penalty = _check_float(
        "length_penalty", pick(params.length_penalty, defaults.length_penalty)
    )
    _check_range(
        "length_penalty",
        length_penalty,
        *LENGTH_PENALTY_RANGE,
        "beam scores are divided by length ** length_penalty",
    )
    if params.seed is not None:
        seed = _check_int("seed", params.seed, 0, 2**64 - 1)
    else:
        seed = secrets.randbits(63)
    explain, explain_top_k, explain_full = _resolve_explain(params, explainable)
    truncate = _check_int("truncate", pick(params.truncate, config.truncate), 0, INT32_MAX)

    return ResolvedParams(
        prompt_len=prompt_len,
        max_length=prompt_len + max_new,
        min_length=min_length,
        num_beams=num_beams,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat,
        length_penalty=length_penalty,
        early_stopping=defaults.early_stopping,
        forced_bos_token_id=defaults.forced_bos_token_id,
        forced_eos_token_id=defaults.forced_eos_token_id,
        seed=seed,
        explain=explain,
        explain_top_k=explain_top_k,
        explain_full=explain_full,
        truncate=truncate,
    )


def check_input_size(
    text: str | None, image: bytes | None, config: EngineConfig, prompt: str | None = None
) -> None:
    """Refuse an input over the server's size caps before any work is spent on it (O(1) for
    images and for texts far over the cap)."""
    for name, value in (("text", text), ("prompt", prompt)):
        if value is None:
            continue
        cap = config.max_input_bytes
        # Every character is at least one UTF-8 byte: a text of more characters is over the cap
        # without being encoded.
        size = len(value) if len(value) > cap else len(value.encode("utf-8", "surrogatepass"))
        if size > cap:
            raise InvalidArgument(
                f"{name} is over {cap} bytes (UTF-8); this server accepts at most {cap} bytes "
                f"per {name} (--max-input-bytes)"
            )
    if image is not None and len(image) > config.max_image_bytes:
        raise InvalidArgument(
            f"image is {len(image)} bytes; the limit is {config.max_image_bytes} bytes"
        )
