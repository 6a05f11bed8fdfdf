"""One model as served: its request preparation, scheduler and runner, and the three stages of
one engine step.

A step is a hand-off of plain data, as in vLLM's engine: `plan` (the scheduler admits and drops
requests: a StepPlan) -> `execute` (the runner encodes newcomers, runs one decoder call and
chooses tokens: a RunnerOutput) -> `update` (stop decisions, rows and K/V reservations released,
one StepEvent per request). The server's Engine and the synchronous driver call these same three;
the Engine only adds its thread, lock, timing and metrics. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.engine.attribution import Attributor, SourceLayout, describe_reduction
from service.engine.config import EngineConfig
from service.engine.request_output import RequestOutput
from service.engine.request_prep import RequestPreparer
from service.engine.runner import ModelRunner, RunnerOutput
from service.engine.scheduler import Scheduler, StepPlan
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.types import GenerationParams
from service.engine.update import update_requests
from service.errors import InvalidArgument
from service.runtime.model import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    name: str
    version: str
    task: str
    architecture: str
    dtype: str
    provider: str  # "CPUExecutionProvider" | "CUDAExecutionProvider"
    is_default: bool  # default model of its task
    max_input_tokens: int


class ServedModel:
    def __init__(self, model: LoadedModel, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        self.manifest = model.manifest
        self.preparer = RequestPreparer(model, config)
        self.scheduler = Scheduler(
            config.max_batch_rows,
            config.kv_budget_bytes,
            config.max_queue,
            static=config.admission == "static",
            max_encoder_tokens=config.max_encoder_tokens_per_step,
        )
        self.runner = ModelRunner(
            model,
            config.uses_device_argmax(),
            encode_beside=config.encoder_beside_decode,
            encoder_nice=config.encoder_nice,
            encoder_cpus=model.threads.encoder_cpus,
        )

    def info(self, is_default: bool) -> ModelInfo:
        m = self.manifest
        return ModelInfo(
            name=m.name,
            version=m.version,
            task=m.task,
            architecture=m.architecture,
            dtype=m.dtype,
            provider=self.model.provider,
            is_default=is_default,
            max_input_tokens=m.max_input_tokens,
        )

    def prepare(
        self,
        text: str | None,
        image: bytes | None,
        params: GenerationParams,
        emit: Callable[[StepEvent], None],
        deadline: float | None = None,
        prompt: str | None = None,
    ) -> SequenceGroup:
        """Validate and encode one request's input; InvalidArgument for anything wrong in it."""
        return self.preparer.prepare(text, image, params, emit, deadline, prompt)

    # ----- the three stages of a step ------------------------------------------------------

    def plan(self, now: float) -> StepPlan:
        return self.scheduler.schedule(now)

    def execute(self, plan: StepPlan) -> RunnerOutput | None:
        return self.runner.execute(plan)

    def update(
        self, plan: StepPlan, output: RunnerOutput | None
    ) -> list[tuple[SequenceGroup, StepEvent]]:
        """Every request's StepEvent from this step; finished requests leave the batch and the
        scheduler (their rows and K/V reservation are free for the next plan)."""
        events = [(group, StepEvent(tokens=[], error=error)) for group, error in plan.drop]
        if output is None:
            return events
        for group, error in output.failed:
            self.scheduler.release(group)
            events.append((group, StepEvent(tokens=[], error=_failure(error))))
        update = update_requests(output, self.runner.eos_ids)
        self.runner.release(update.finished + [group for group, _ in output.failed])
        for group in update.finished:
            self.scheduler.release(group)
        return events + update.events

    def step(self, now: float | None = None) -> list[tuple[SequenceGroup, StepEvent]]:
        """plan -> execute -> update, for callers that drive the model alone (not thread-safe)."""
        plan = self.plan(time.monotonic() if now is None else now)
        return self.update(plan, self.execute(plan))

    def reset(self) -> list[SequenceGroup]:
        """Forget every running request (after a runtime failure); returns them."""
        groups = list(self.scheduler.running)
        self.scheduler.running.clear()
        self.runner.reset()
        return groups

    # ----- outputs -------------------------------------------------------------------------

    def output(self, group: SequenceGroup) -> RequestOutput:
        return RequestOutput(self, group)

    def attributor(self, source: SourceLayout) -> Attributor:
        spec = self.manifest.cross_attention
        assert spec is not None  # requests only ask for explain on models that have it
        reduction = describe_reduction(spec, self.manifest.dims.num_layers)
        return Attributor(source, reduction, self.model.tokenizer.token_text)


def _failure(error: Exception) -> Exception:
    """What a request that failed inside a step is told: its own error when the request was at
    fault (InvalidArgument), else a server fault, logged."""
    if isinstance(error, InvalidArgument):
        return error
    log.error("the model failed on one request's input; it alone fails", exc_info=error)
    return RuntimeError(f"the model failed on this request's input: {error}")
