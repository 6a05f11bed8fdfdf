"""What the engine tells its metrics: loads, refusals, and what each step did to its requests.

Kept apart from the step loop so that engine.py reads as scheduling, not bookkeeping; every
call here is a ServerMetrics method, and the clocks are the engine's own (time.monotonic).
"""

from __future__ import annotations

from collections.abc import Iterable

from service.engine.scheduler import StepPlan
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.served_model import ServedModel
from service.errors import Cancelled, ServeError
from service.metrics import ServerMetrics, rejection_reason
from service.runtime.step_counters import StepCounters


class EngineReporter:
    """Reports one engine's events to `metrics`."""

    def __init__(self, metrics: ServerMetrics, kv_budget_bytes: int) -> None:
        self.metrics = metrics
        self._kv_budget_bytes = kv_budget_bytes

    def loaded(self, served: ServedModel, seconds: float) -> None:
        self.metrics.model_loaded(**_model_labels(served), seconds=seconds)
        self.queue_state(served)

    def unloaded(self, served: ServedModel) -> None:
        self.metrics.model_unloaded(served.manifest.name, served.manifest.version)

    def rejected(self, served: ServedModel, error: ServeError) -> None:
        """A request for `served` was refused before it was queued."""
        self.metrics.rejected(served.manifest.name, rejection_reason(error))

    def queue_state(self, served: ServedModel) -> None:
        """Running and waiting requests and K/V bytes of `served`, as they are now."""
        name, version = served.manifest.name, served.manifest.version
        scheduler = served.scheduler
        self.metrics.set_queue_state(name, version, len(scheduler.running), len(scheduler.waiting))
        self.metrics.set_kv_cache(name, version, served.runner.kv_bytes(), self._kv_budget_bytes)

    def step(
        self,
        served: ServedModel,
        plan: StepPlan,
        events: Iterable[tuple[SequenceGroup, StepEvent]],
        rows: int,
        seconds: float,
        now: float,
        counters: StepCounters,
    ) -> None:
        """One step over `rows` decode rows took `seconds` (its encoder run included), cost
        the runtime `counters` and ended at `now`."""
        name, version = served.manifest.name, served.manifest.version
        metrics = self.metrics
        for group in plan.admit:
            assert group.admitted_at is not None  # the scheduler stamps what it admits
            metrics.queue_wait(name, version, group.admitted_at - group.arrived_at)
        for group, error in plan.drop:
            if group.admitted_at is None and not isinstance(error, Cancelled):
                metrics.rejected(name, rejection_reason(error))  # e.g. expired while waiting
        for run in served.runner.encoder_runs:
            metrics.encoder_ran(name, version, run.seconds, run.tokens)
            for group in run.batch.requests:
                group.encoder_seconds = run.seconds  # for its trace
        if rows:
            metrics.decode_step(name, version, rows, seconds)
        metrics.step_costs(
            name,
            version,
            counters.host_seconds(seconds),
            counters.host_to_device_bytes,
            counters.device_to_host_bytes,
            counters.kv_allocations,
            counters.session_runs,
        )
        gaps = []
        for group, event in events:
            gap = _token_gap(group, event, now)
            if gap is not None:
                gaps.append(gap)
            self._request_progress(name, version, group, event, now)
        metrics.inter_token_gaps(name, version, gaps)
        self.queue_state(served)

    def _request_progress(
        self, name: str, version: str, group: SequenceGroup, event: StepEvent, now: float
    ) -> None:
        if event.tokens and group.first_token_at is None:
            group.first_token_at = now
            self.metrics.first_token(name, version, now - group.arrived_at)
        if not event.finish_reason:
            return
        group.finished_at = now
        generated = len(group.generated)
        self.metrics.tokens(name, version, group.read_tokens, generated)
        # A beam-search answer arrives whole: it has no time between tokens.
        if group.beam is None and generated > 1 and group.first_token_at is not None:
            interval = (now - group.first_token_at) / (generated - 1)
            self.metrics.token_interval(name, version, interval)


def _token_gap(group: SequenceGroup, event: StepEvent, now: float) -> float | None:
    """Seconds since the request's previous token, if this event brings its next one; a
    beam-search answer arrives whole and has no gaps."""
    if not event.tokens or group.beam is not None:
        return None
    previous, group.last_token_at = group.last_token_at, now
    return None if previous is None else now - previous


def _model_labels(served: ServedModel) -> dict[str, str]:
    """How the model info metric names a model."""
    info = served.info(is_default=False)
    return {
        "model": info.name,
        "version": info.version,
        "dtype": info.dtype,
        "provider": info.provider,
        "architecture": info.architecture,
    }
