"""The static (request-level batching) admission baseline: newcomers join only an empty batch."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.config import EngineConfig
from service.engine.scheduler import Scheduler
from service.engine.sequence import SequenceGroup
from service.engine.types import GenerationParams
from service.engine.validation import resolve_params
from service.runtime.manifest import GenerationDefaults

CONFIG = EngineConfig()


def _group() -> SequenceGroup:
    return SequenceGroup(
        params=resolve_params(GenerationParams(), GenerationDefaults(), CONFIG),
        encoder_feeds={"input_ids": np.zeros((1, 3), np.int64)},
        input_tokens=3,
        emit=lambda event: None,
        kv_reservation=1,
    )


def test_static_admission_waits_until_the_whole_batch_has_finished():
    scheduler = Scheduler(max_rows=4, kv_budget_bytes=100, max_queue=10, static=True)
    first, second, late = _group(), _group(), _group()
    scheduler.add(first)
    scheduler.add(second)
    assert scheduler.schedule(now=0.0).admit == [first, second], "an empty batch takes all"
    scheduler.add(late)
    scheduler.release(first)
    assert scheduler.schedule(now=0.0).admit == [], "a row is free but the batch is not empty"
    scheduler.release(second)
    assert scheduler.schedule(now=0.0).admit == [late]


def test_continuous_admission_fills_a_free_row_at_once():
    scheduler = Scheduler(max_rows=2, kv_budget_bytes=100, max_queue=10)
    first, second, late = _group(), _group(), _group()
    for group in (first, second):
        scheduler.add(group)
    scheduler.schedule(now=0.0)
    scheduler.add(late)
    scheduler.release(first)
    assert scheduler.schedule(now=0.0).admit == [late]


def test_engine_config_rejects_an_unknown_admission_policy():
    with pytest.raises(ValueError, match="admission must be one of"):
        EngineConfig(admission="greedy").validate()
