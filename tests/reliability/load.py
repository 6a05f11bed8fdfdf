"""Open-loop load for the overload and soak tests: requests sent at a fixed rate whatever the
server answers, each outcome recorded with its latency."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np


@dataclass
class Outcome:
    code: grpc.StatusCode
    latency_s: float
    response: object | None  # the answer of an OK call


@dataclass
class LoadRun:
    """What an open-loop run offered and got back."""

    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def offered_per_s(self) -> float:
        return len(self.outcomes) / self.duration_s

    def codes(self) -> Counter[str]:
        return Counter(o.code.name for o in self.outcomes)

    def latencies(self, code: grpc.StatusCode) -> np.ndarray:
        return np.array([o.latency_s for o in self.outcomes if o.code == code])

    def responses(self) -> list[object]:
        return [o.response for o in self.outcomes if o.code == grpc.StatusCode.OK]


def _outcome(call: grpc.Future, sent_at: float) -> Outcome:
    latency = time.perf_counter() - sent_at
    error = call.exception()
    if error is None:
        return Outcome(grpc.StatusCode.OK, latency, call.result())
    return Outcome(error.code(), latency, None)


def offer_load(
    send: Callable[[], grpc.Future], per_second: float, duration_s: float, timeout_s: float = 60
) -> LoadRun:
    """Call `send` (which starts one unary call and returns its future) `per_second` times a
    second for `duration_s`, then wait for every call to end."""
    run = LoadRun(duration_s)
    lock = threading.Lock()
    pending: list[grpc.Future] = []
    started = time.perf_counter()
    for index in range(int(per_second * duration_s)):
        time.sleep(max(0.0, started + index / per_second - time.perf_counter()))
        sent_at = time.perf_counter()
        call = send()

        def record(done: grpc.Future, sent_at: float = sent_at) -> None:
            outcome = _outcome(done, sent_at)
            with lock:
                run.outcomes.append(outcome)

        call.add_done_callback(record)
        pending.append(call)
    for call in pending:
        call.exception(timeout=timeout_s)  # waits for the end, whatever it is
    deadline = time.monotonic() + timeout_s
    while len(run.outcomes) < len(pending) and time.monotonic() < deadline:
        time.sleep(0.01)  # the last callbacks run just after their futures complete
    return run
