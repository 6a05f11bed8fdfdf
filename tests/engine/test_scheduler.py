"""Scheduler policy: FIFO admission under row and K/V limits, drops for cancel and deadline."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.config import EngineConfig
from service.engine.scheduler import Scheduler
from service.engine.sequence import SequenceGroup
from service.engine.types import GenerationParams
from service.engine.validation import resolve_params
from service.errors import Cancelled, DeadlineExceeded, ResourceExhausted
from service.runtime.manifest import GenerationDefaults


def _group(num_beams: int = 1, reservation: int = 10, deadline: float | None = None):
    params = resolve_params(GenerationParams(num_beams=num_beams), GenerationDefaults(), CONFIG)
    return SequenceGroup(
        params=params,
        encoder_feeds={"input_ids": np.zeros((1, 3), np.int64)},
        input_tokens=3,
        emit=lambda event: None,
        deadline=deadline,
        kv_reservation=reservation,
    )


CONFIG = EngineConfig()


def test_admission_is_fifo_and_stops_at_the_row_limit():
    scheduler = Scheduler(max_rows=5, kv_budget_bytes=1000, max_queue=10)
    groups = [_group(num_beams=2), _group(num_beams=4), _group(num_beams=1)]
    for g in groups:
        scheduler.add(g)
    plan = scheduler.schedule(now=0.0)
    assert plan.admit == groups[:1], "the 4-beam head blocks the 1-row request behind it"
    scheduler.release(groups[0])
    assert scheduler.schedule(now=0.0).admit == groups[1:]


def test_admission_respects_the_kv_budget():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=100, max_queue=10)
    first, second = _group(reservation=60), _group(reservation=60)
    scheduler.add(first)
    scheduler.add(second)
    assert scheduler.schedule(now=0.0).admit == [first]
    assert scheduler.schedule(now=0.0).admit == []
    scheduler.release(first)
    assert scheduler.schedule(now=0.0).admit == [second]


def test_full_queue_is_refused_at_once():
    scheduler = Scheduler(max_rows=4, kv_budget_bytes=100, max_queue=1)
    scheduler.add(_group())
    with pytest.raises(ResourceExhausted, match="queue is full"):
        scheduler.add(_group())


def test_request_larger_than_the_whole_budget_is_refused():
    scheduler = Scheduler(max_rows=4, kv_budget_bytes=100, max_queue=4)
    with pytest.raises(ResourceExhausted, match="budget"):
        scheduler.add(_group(reservation=101))


def test_expired_waiting_request_is_dropped_without_being_admitted():
    scheduler = Scheduler(max_rows=4, kv_budget_bytes=100, max_queue=4)
    late = _group(deadline=5.0)
    scheduler.add(late)
    plan = scheduler.schedule(now=6.0)
    assert plan.admit == []
    assert [(g, type(e)) for g, e in plan.drop] == [(late, DeadlineExceeded)]


def test_cancelled_and_expired_running_requests_leave_at_the_next_step():
    scheduler = Scheduler(max_rows=4, kv_budget_bytes=100, max_queue=4)
    cancelled, expiring, staying = _group(), _group(deadline=5.0), _group()
    for g in (cancelled, expiring, staying):
        scheduler.add(g)
    scheduler.schedule(now=0.0)
    cancelled.cancelled = True
    plan = scheduler.schedule(now=6.0)
    assert {(id(g), type(e)) for g, e in plan.drop} == {
        (id(cancelled), Cancelled),
        (id(expiring), DeadlineExceeded),
    }
    assert scheduler.running == [staying]
