"""Decoding settings for the engine's unit tests: greedy with every logits processor off, and
any field overridden, so each test states only the settings it is about."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service.engine.validation import ResolvedParams

GREEDY = ResolvedParams(
    prompt_len=1,
    max_length=20,
    min_length=0,
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


def resolved_params(**overrides: Any) -> ResolvedParams:
    """GREEDY with `overrides` replacing its fields."""
    return replace(GREEDY, **overrides)
