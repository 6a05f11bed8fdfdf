"""Scheduler policy: FIFO admission under row, K/V and per-step encoder limits, drops for cancel
and deadline."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.config import EngineConfig
from service.engine.scheduler import Scheduler, encoder_tokens
from service.engine.sequence import SequenceGroup
from service.engine.types import GenerationParams
from service.engine.validation import resolve_params
from service.errors import Cancelled, DeadlineExceeded, ResourceExhausted
from service.runtime.manifest import GenerationDefaults


def _group(
    num_beams: int = 1, reservation: int = 10, deadline: float | None = None, tokens: int = 3
):
    params = resolve_params(GenerationParams(num_beams=num_beams), GenerationDefaults(), CONFIG)
    return SequenceGroup(
        params=params,
        encoder_feeds={"input_ids": np.zeros((1, tokens), np.int64)},
        input_tokens=tokens,
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


def _queued(scheduler: Scheduler, *tokens: int) -> list[SequenceGroup]:
    groups = [_group(tokens=n) for n in tokens]
    for group in groups:
        scheduler.add(group)
    return groups


def _admissions(scheduler: Scheduler, steps: int) -> list[list[SequenceGroup]]:
    return [scheduler.schedule(now=0.0).admit for _ in range(steps)]


def test_newcomers_join_while_their_padded_encoder_tokens_fit_the_step_budget():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=1000, max_queue=10, max_encoder_tokens=100)
    a, b, c, d = _queued(scheduler, 30, 20, 40, 10)
    plan = scheduler.schedule(now=0.0)
    assert plan.admit == [a, b], "a third newcomer would make 3 x 40 = 120 tokens"
    assert encoder_tokens(plan.admit) == 2 * 30, "the shorter input is padded to the longer"
    assert scheduler.schedule(now=0.0).admit == [c, d]


def test_a_request_over_the_budget_is_admitted_alone_when_it_heads_the_queue():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=1000, max_queue=10, max_encoder_tokens=100)
    small, big, after = _queued(scheduler, 10, 300, 10)
    assert _admissions(scheduler, 3) == [[small], [big], [after]]


def test_the_encoder_budget_keeps_fifo_order_short_requests_never_overtake():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=1000, max_queue=10, max_encoder_tokens=130)
    first, second, short = _queued(scheduler, 60, 80, 5)
    # `short` would fit beside `first` (2 x 60 tokens), but `second` is ahead of it
    assert _admissions(scheduler, 3) == [[first], [second], [short]]


def test_an_encoder_budget_of_zero_admits_every_newcomer_that_fits_rows_and_kv():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=1000, max_queue=10, max_encoder_tokens=0)
    groups = _queued(scheduler, 500, 500, 500)
    assert scheduler.schedule(now=0.0).admit == groups


def test_a_step_with_no_newcomer_runs_no_encoder_tokens():
    scheduler = Scheduler(max_rows=32, kv_budget_bytes=1000, max_queue=10, max_encoder_tokens=100)
    assert encoder_tokens(scheduler.schedule(now=0.0).admit) == 0
