"""Load generators over gRPC: closed loop (at most N requests in flight, the next one sent as soon
as one is answered; optionally paced, one every `arrival_interval_s` at the earliest, so that
requests arrive staggered, as users do, instead of all at once) and open loop (Poisson arrivals
at a rate, whatever the answers do).

Every request is streamed, so the time of its first token and of every later chunk is seen: the
gaps between a stream's chunks are the stalls its user watches.
A run has three phases at the same load: warm-up (discarded), measurement, and cool-down: the
load goes on after the measurement until every measured request is answered, so the last
measured ones see the same load as the first; what is still running then is cancelled.

Measured requests are those sent during the measurement phase (for `duration_s`, or until
`requests` were sent). Throughput counts what the server delivered inside the measurement
window (all requests' tokens and completions), so it is the steady-state rate at that load.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np

from bench.workload import BenchRequest
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.runtime.tasks import Task

MODES = ("closed", "open")
_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class LoadSpec:
    """How hard and for how long to drive the server."""

    mode: str  # "closed": `level` concurrent clients; "open": Poisson arrivals, `level` req/s
    level: float
    warmup_s: float = 5.0
    duration_s: float | None = None  # measure for this long ...
    requests: int | None = None  # ... or until this many requests were sent
    seed: int = 0  # arrival times of the open loop
    arrival_interval_s: float = 0.0  # closed loop: request k leaves k x this after the start
    # at the earliest (0: as soon as one of the `level` slots is free)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"load mode must be one of {MODES}, got {self.mode!r}")
        if self.level <= 0 or (self.mode == "closed" and self.level != int(self.level)):
            raise ValueError("load level must be > 0 (a whole number of clients if closed loop)")
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of a measurement duration or a request count")
        if (self.duration_s or 1) <= 0 or (self.requests or 1) <= 0 or self.warmup_s < 0:
            raise ValueError("duration and request count must be > 0, warm-up >= 0")
        if self.arrival_interval_s < 0 or (self.arrival_interval_s and self.mode != "closed"):
            raise ValueError("an arrival interval is >= 0 and paces the closed loop only")


@dataclass
class RequestRecord:
    """One measured request, as the client saw it (perf_counter seconds)."""

    sent: float
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)  # every chunk that brought tokens
    finished: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None  # gRPC status code name when it failed


@dataclass
class LoadRun:
    """What a run observed: the measured requests and what arrived inside the window."""

    load: LoadSpec
    records: list[RequestRecord]
    window_start: float
    window_end: float
    window_tokens: int  # tokens of any request that arrived inside the window
    window_completions: int  # requests of any phase answered (without error) inside the window
    decode_batch: float | None = None  # mean decode rows per step in the window (server metric)


@dataclass
class _Phases:
    """Which phase a request is sent in, and when the run is over."""

    load: LoadSpec
    started: float
    measured: list[RequestRecord] = field(default_factory=list)
    window_end: float | None = None
    token_times: list[tuple[float, int]] = field(default_factory=list)
    completion_times: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def window_start(self) -> float:
        return self.started + self.load.warmup_s

    def record_for(self, now: float) -> RequestRecord | None:
        """A record if a request sent now is measured, None in warm-up and cool-down."""
        if now < self.window_start:
            return None
        load = self.load
        if load.duration_s is not None and now >= self.window_start + load.duration_s:
            return None
        if load.requests is not None and len(self.measured) >= load.requests:
            return None
        record = RequestRecord(sent=now)
        self.measured.append(record)
        return record

    def answered(self, now: float, ok: bool) -> None:
        """Called after each request ends: the run is over once every measured one has."""
        if ok:
            self.completion_times.append(now)
        load = self.load
        sending_over = (
            now >= self.window_start + load.duration_s
            if load.duration_s is not None
            else len(self.measured) >= (load.requests or 0)
        )
        if sending_over and all(r.finished is not None for r in self.measured):
            if self.window_end is None:
                self.window_end = (
                    self.window_start + load.duration_s if load.duration_s is not None else now
                )
            self.done.set()


class LoadDriver:
    """Sends `requests` (cycled) to `model` on `target` under a LoadSpec."""

    def __init__(self, target: str, task: str, model: str, requests: list[BenchRequest]) -> None:
        if not requests:
            raise ValueError("no requests to send")
        self.target, self.task, self.model = target, task, model
        self._requests = requests

    async def run(
        self, load: LoadSpec, decode_batch_probe: Callable[[], tuple[float, float]] | None = None
    ) -> LoadRun:
        """Drive the server; `decode_batch_probe` returns the server's cumulative (sum, count)
        of decode rows per step, read at both ends of the window for the mean batch size."""
        load.validate()
        options = [("grpc.max_send_message_length", _MESSAGE_BYTES)]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            stub = pb_grpc.AttentionServiceStub(channel)
            call = stub.CaptionStream if self.task == Task.CAPTIONING else stub.SummarizeStream
            phases = _Phases(load, time.perf_counter())
            sender = _Sender(self, call, phases)
            generator = self._closed_loop if load.mode == "closed" else self._open_loop
            traffic = asyncio.ensure_future(generator(sender, load))
            await asyncio.sleep(max(0.0, phases.window_start - time.perf_counter()))
            before = await _probe(decode_batch_probe)
            await phases.done.wait()
            after = await _probe(decode_batch_probe)
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
        assert phases.window_end is not None
        start, end = phases.window_start, phases.window_end
        return LoadRun(
            load=load,
            records=phases.measured,
            window_start=start,
            window_end=end,
            window_tokens=sum(n for t, n in phases.token_times if start <= t <= end),
            window_completions=sum(1 for t in phases.completion_times if start <= t <= end),
            decode_batch=_mean_between(before, after),
        )

    def _next_request(self, counter: itertools.count) -> BenchRequest:
        return self._requests[next(counter) % len(self._requests)]

    async def _closed_loop(self, sender: _Sender, load: LoadSpec) -> None:
        slots = asyncio.Semaphore(int(load.level))
        await self._send_loop(sender, itertools.repeat(load.arrival_interval_s), slots)

    async def _open_loop(self, sender: _Sender, load: LoadSpec) -> None:
        rng = np.random.default_rng(load.seed)
        gaps = (rng.exponential(1.0 / load.level) for _ in itertools.count())
        await self._send_loop(sender, gaps, None)

    async def _send_loop(
        self, sender: _Sender, gaps: Iterator[float], slots: asyncio.Semaphore | None
    ) -> None:
        """Send requests `gaps` seconds apart at the earliest, holding one of `slots` each
        while it runs (None: no limit on requests in flight), until cancelled."""
        counter = itertools.count()
        in_flight: set[asyncio.Task] = set()
        next_at = time.perf_counter()

        async def send(request: BenchRequest) -> None:
            try:
                await sender.send(request)
            finally:
                if slots is not None:
                    slots.release()

        try:
            for gap in gaps:
                if slots is not None:
                    await slots.acquire()
                next_at += gap
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                task = asyncio.ensure_future(send(self._next_request(counter)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)


class _Sender:
    """Sends one request as a stream and records what came back."""

    def __init__(self, driver: LoadDriver, call, phases: _Phases) -> None:
        self._driver, self._call, self._phases = driver, call, phases

    async def send(self, request: BenchRequest) -> None:
        phases, driver = self._phases, self._driver
        params = pb.GenerationParams(**request.params)
        if driver.task == Task.CAPTIONING:
            message = pb.CaptionRequest(model=driver.model, image=request.payload, params=params)
        else:
            message = pb.SummarizeRequest(model=driver.model, text=request.payload, params=params)
        record = phases.record_for(time.perf_counter())
        error = None
        try:
            async for chunk in self._call(message):
                now = time.perf_counter()
                if chunk.token_ids:
                    phases.token_times.append((now, len(chunk.token_ids)))
                    if record is not None:
                        record.token_times.append(now)
                        if record.first_token is None:
                            record.first_token = now
                if chunk.finish_reason and record is not None:
                    record.input_tokens = chunk.input_tokens
                    record.output_tokens = chunk.output_tokens
        except grpc.aio.AioRpcError as exc:
            error = exc.code().name
        now = time.perf_counter()
        if record is not None:
            record.error, record.finished = error, now
        phases.answered(now, ok=error is None)


async def _probe(probe: Callable[[], tuple[float, float]] | None) -> tuple[float, float] | None:
    if probe is None:
        return None
    try:
        return await asyncio.to_thread(probe)
    except OSError:  # the metrics endpoint is down or unreachable: report n/a
        return None


def _mean_between(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])
