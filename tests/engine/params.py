"""Decoding settings for the engine's unit tests: greedy with every logits processor off, and
any field overridden, so each test states only the settings it is about."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service.engine.validation import ResolvedParams

GREEDY = ResolvedParams.greedy(max_length=20)


def resolved_params(**overrides: Any) -> ResolvedParams:
    """GREEDY with `overrides` replacing its fields."""
    return replace(GREEDY, **overrides)
