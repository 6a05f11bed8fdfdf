"""Offered load far above capacity for a bounded time, with a small queue: the excess is refused
with RESOURCE_EXHAUSTED at once, every accepted request completes in full, the queue never
grows past its bound. The figures are printed (run with -s; docs/reliability.md quotes them)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import SUMMARIZER, TEXT
from tests.reliability.load import offer_load

MAX_QUEUE = 4
MAX_BATCH_ROWS = 4
NEW_TOKENS = 400  # forced: every accepted request does the same, known amount of work
OFFERED_PER_S = 150.0
DURATION_S = 4.0
REJECTION_P99_BOUND_S = 0.5  # "at once": far below one accepted request's time in the queue


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[InProcessServer]:
    limits = {"max_queue": MAX_QUEUE, "max_batch_rows": MAX_BATCH_ROWS, "max_num_beams": 1}
    with serving(models_dir, **limits) as running:
        yield running


class QueueWatch:
    """Samples the engine's queue length every few milliseconds while a run goes on."""

    def __init__(self, server: InProcessServer) -> None:
        self._server = server
        self._stop = threading.Event()
        self.longest = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.longest = max(self.longest, self._server.engine.queue_length())

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Overload:
    """What one overload run got back (figures only, so a failing assert prints briefly)."""

    codes: dict[str, int]
    output_tokens: set[int]  # of the served requests
    longest_queue: int
    refused_s: np.ndarray = field(repr=False)  # latency of each refusal
    served_s: np.ndarray = field(repr=False)  # latency of each served request


@pytest.fixture(scope="module")
def overload(server: InProcessServer) -> Overload:
    request = pb.SummarizeRequest(
        model=SUMMARIZER,
        text=TEXT,
        params=pb.GenerationParams(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS),
    )
    with grpc.insecure_channel(server.target) as channel, QueueWatch(server) as watch:
        stub = pb_grpc.AttentionServiceStub(channel)
        run = offer_load(
            lambda: stub.Summarize.future(request, timeout=60), OFFERED_PER_S, DURATION_S
        )
    result = Overload(
        codes=dict(run.codes()),
        output_tokens={response.output_tokens for response in run.responses()},
        longest_queue=watch.longest,
        refused_s=run.latencies(grpc.StatusCode.RESOURCE_EXHAUSTED),
        served_s=run.latencies(grpc.StatusCode.OK),
    )
    refused, served = result.refused_s * 1e3, result.served_s * 1e3
    print(
        f"\noverload: offered {run.offered_per_s:.0f} req/s for {DURATION_S:.0f} s; "
        f"codes {result.codes}; served {len(served) / DURATION_S:.1f} req/s; "
        f"rejection latency p50 {np.median(refused):.1f} ms, "
        f"p99 {np.percentile(refused, 99):.1f} ms, max {refused.max():.1f} ms; "
        f"served latency p50 {np.median(served):.0f} ms; longest queue {watch.longest}"
    )
    return result


def test_the_load_is_well_above_capacity(overload: Overload):
    assert overload.codes["RESOURCE_EXHAUSTED"] > 2 * overload.codes["OK"]


def test_every_request_is_either_served_or_refused_as_exhausted(overload: Overload):
    assert set(overload.codes) == {"OK", "RESOURCE_EXHAUSTED"}


def test_every_accepted_request_completes_in_full(overload: Overload):
    assert overload.output_tokens == {NEW_TOKENS}


def test_refusals_are_answered_at_once(overload: Overload):
    assert np.percentile(overload.refused_s, 99) < REJECTION_P99_BOUND_S
    assert np.median(overload.refused_s) < np.median(overload.served_s) / 10


def test_the_queue_never_exceeds_its_bound(overload: Overload):
    assert 0 < overload.longest_queue <= MAX_QUEUE


def test_the_server_serves_normally_after_the_overload(server: InProcessServer, overload: Overload):
    request = pb.SummarizeRequest(text=TEXT, params=pb.GenerationParams(max_new_tokens=4))
    with grpc.insecure_channel(server.target) as channel:
        answer = pb_grpc.AttentionServiceStub(channel).Summarize(request, timeout=30)

    assert answer.output_tokens == 4
    assert server.engine.queue_length() == 0 and server.engine.running_rows() == 0
