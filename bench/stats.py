"""From what a run observed to the numbers a benchmark reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # keeps grpc out of the imports of the GPU script, which uses Percentiles
    from bench.driver import LoadRun

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds; None when nothing was measured."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        if not seconds:
            return cls(None, None, None, None, None, None)
        ms = np.asarray(seconds) * 1000.0
        p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
        return cls(p50, p90, p95, p99, float(ms.max()), float(ms.mean()))


@dataclass(frozen=True)
class LoadResult:
    """One load point of one server configuration."""

    mode: str  # "closed" or "open"
    level: float  # concurrent clients or requests/s
    arrival_interval_s: float  # closed loop: seconds between sends at the earliest (0: none)
    window_s: float  # measurement window
    requests: int  # measured requests (sent in the window)
    completed: int  # of those, answered
    errors: dict[str, int]  # of those, failed: gRPC status code -> count
    throughput_rps: float  # requests answered per second in the window (all phases)
    tokens_per_s: float  # tokens generated per second in the window (all phases)
    latency_ms: Percentiles  # measured requests, send to last token
    ttft_ms: Percentiles  # measured requests, send to first token
    inter_token_ms: Percentiles  # every gap between two token chunks of a measured stream
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    output_tokens: int  # total over the completed measured requests
    mean_decode_batch: float | None  # server's mean rows per decode step; None: no metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(run: LoadRun) -> LoadResult:
    ok = [r for r in run.records if r.error is None and r.finished is not None]
    errors: dict[str, int] = {}
    for record in run.records:
        if record.error is not None:
            errors[record.error] = errors.get(record.error, 0) + 1
    window = max(run.window_end - run.window_start, 1e-9)
    return LoadResult(
        mode=run.load.mode,
        level=run.load.level,
        arrival_interval_s=run.load.arrival_interval_s,
        window_s=window,
        requests=len(run.records),
        completed=len(ok),
        errors=errors,
        throughput_rps=run.window_completions / window,
        tokens_per_s=run.window_tokens / window,
        latency_ms=Percentiles.of([r.finished - r.sent for r in ok]),  # type: ignore[operator]
        ttft_ms=Percentiles.of([r.first_token - r.sent for r in ok if r.first_token is not None]),
        inter_token_ms=Percentiles.of([gap for r in ok for gap in np.diff(r.token_times)]),
        mean_input_tokens=float(np.mean([r.input_tokens for r in ok])) if ok else None,
        mean_output_tokens=float(np.mean([r.output_tokens for r in ok])) if ok else None,
        output_tokens=sum(r.output_tokens for r in ok),
        mean_decode_batch=run.decode_batch,
    )
