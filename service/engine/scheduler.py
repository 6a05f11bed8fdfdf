"""Continuous batching policy for one model: who waits, who joins, who leaves.

The plan stage of a step (docs/architecture.md): the scheduler decides and never touches
tensors. `schedule()` returns a `StepPlan` (requests to admit, requests to drop and why), the
runner executes it, and the update stage calls `release()` to return a finished request's rows
and K/V reservation. Admission is FIFO: the head of the queue is never overtaken, so a big
request cannot starve behind a stream of small ones.

Newcomers' encoders run inside the step, before its decoder call, so every running stream waits
for them (beside the steps, service.engine.encoding, they slow the steps instead): a per-step
encoder budget bounds that (vLLM's per-step token budget, for encoders). A step's encoder work
is counted as the encoder runs it, newcomers x the longest newcomer's tokens (shorter inputs are
padded to it; images all have the same patch count). The first newcomer of a step is admitted
whatever its size, so a request over the budget runs alone in its step instead of waiting for
ever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from service.engine.sequence import SequenceGroup
from service.errors import Cancelled, DeadlineExceeded, ResourceExhausted, ServeError


@dataclass
class StepPlan:
    admit: list[SequenceGroup]  # join the decode batch this step (encoders run together)
    drop: list[tuple[SequenceGroup, ServeError]]  # leave before the step (running or waiting)

    @property
    def empty(self) -> bool:
        return not self.admit and not self.drop


def encoder_tokens(groups: list[SequenceGroup]) -> int:
    """Tokens one encoder run over `groups` computes: each input padded to the longest."""
    return len(groups) * max((g.input_tokens for g in groups), default=0)


class Scheduler:
    """FIFO admission under a row limit, a K/V budget and a per-step encoder budget."""

    def __init__(
        self,
        max_rows: int,
        kv_budget_bytes: int,
        max_queue: int,
        static: bool = False,
        max_encoder_tokens: int = 0,
    ) -> None:
        self.max_rows = max_rows
        self.kv_budget_bytes = kv_budget_bytes
        self.max_queue = max_queue
        self.static = static  # admit only into an empty batch (request-level batching baseline)
        self.max_encoder_tokens = max_encoder_tokens  # per step; 0 = no limit
        self.waiting: deque[SequenceGroup] = deque()
        self.running: list[SequenceGroup] = []

    @property
    def running_rows(self) -> int:
        return sum(g.rows for g in self.running)

    @property
    def reserved_bytes(self) -> int:
        return sum(g.kv_reservation for g in self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, group: SequenceGroup) -> None:
        """Queue a request; ResourceExhausted at once when the queue is full."""
        if group.kv_reservation > self.kv_budget_bytes:
            raise ResourceExhausted(
                f"the request needs {group.kv_reservation} bytes of K/V cache, more than this "
                f"model's whole budget of {self.kv_budget_bytes} bytes (--kv-budget-mb, per "
                "model); ask for fewer new tokens or beams"
            )
        self.check_room()
        self.waiting.append(group)

    def check_room(self, count: int = 1) -> None:
        """ResourceExhausted when `count` more requests do not fit in the queue (checked again
        as each is added)."""
        if len(self.waiting) + count <= self.max_queue:
            return
        if count == 1:
            raise ResourceExhausted(
                f"the request queue is full ({self.max_queue} waiting); retry later"
            )
        room = max(self.max_queue - len(self.waiting), 0)
        raise ResourceExhausted(
            f"the request queue has room for {room} of this call's {count} elements "
            f"({self.max_queue} may wait); retry later"
        )

    def schedule(self, now: float) -> StepPlan:
        drop: list[tuple[SequenceGroup, ServeError]] = []
        for group in self.running:
            reason = _leave_reason(group, now, "while running")
            if reason:
                drop.append((group, reason))
        for group, _ in drop:
            self.running.remove(group)

        for group in list(self.waiting):
            reason = _leave_reason(group, now, "before it started")
            if reason:
                self.waiting.remove(group)
                drop.append((group, reason))

        admit: list[SequenceGroup] = []
        rows, reserved = self.running_rows, self.reserved_bytes
        while self.waiting and not (self.static and self.running):
            head = self.waiting[0]
            if rows + head.rows > self.max_rows:
                break
            if reserved + head.kv_reservation > self.kv_budget_bytes:
                break
            if admit and not self._encoder_fits([*admit, head]):
                break
            self.waiting.popleft()
            head.admitted_at = now
            rows += head.rows
            reserved += head.kv_reservation
            admit.append(head)
        self.running.extend(admit)
        return StepPlan(admit=admit, drop=drop)

    def _encoder_fits(self, newcomers: list[SequenceGroup]) -> bool:
        limit = self.max_encoder_tokens
        return not limit or encoder_tokens(newcomers) <= limit

    def release(self, group: SequenceGroup) -> None:
        """A running request finished: its rows and reservation are free for the next step."""
        self.running.remove(group)


def _leave_reason(group: SequenceGroup, now: float, when: str) -> ServeError | None:
    if group.cancelled:
        return Cancelled("the client cancelled the request")
    if group.expired(now):
        return DeadlineExceeded(f"the request's deadline passed {when}")
    return None
