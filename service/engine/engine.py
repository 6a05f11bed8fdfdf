"""The async generation engine the transport talks to (see docs in engine-api).

One worker thread runs every model's step loop (ONNX Runtime releases the GIL while it computes);
asyncio consumers receive their request's events through `loop.call_soon_threadsafe`. A consumer
that stops iterating marks its request cancelled, and the next step frees its rows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

from service.engine.config import EngineConfig
from service.engine.reporting import EngineReporter
from service.engine.scheduler import SequenceGroup, StepEvent
from service.engine.served import ModelInfo, ServedModel
from service.engine.types import GenerationRequest, GenerationResult, TokenDelta
from service.errors import DeadlineExceeded, InvalidArgument, NotFound, ServeError, Unavailable
from service.metrics import ServerMetrics
from service.runtime.manifest import MANIFEST_FILE
from service.runtime.model import LoadedModel

__all__ = ["Engine", "EngineConfig", "ModelInfo"]


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


class Engine:
    def __init__(
        self,
        served: list[ServedModel],
        config: EngineConfig,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.config = config
        self._report = EngineReporter(metrics or ServerMetrics(), config.kv_budget_bytes)
        self._served = sorted(
            served, key=lambda s: (s.manifest.name, _version_key(s.manifest.version))
        )
        self._defaults: dict[str, str] = {}
        for s in self._served:
            self._defaults.setdefault(s.manifest.task, s.manifest.name)
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._draining = False
        self._stopping = False
        self._abort = False  # stop without drain: fail what is left instead of finishing it

    @classmethod
    def load(
        cls, models_dir: Path, config: EngineConfig, metrics: ServerMetrics | None = None
    ) -> Engine:
        """Every subdirectory of `models_dir` holding a model.json is a served model; their
        metrics go to `metrics` (a private ServerMetrics if None)."""
        config.validate()
        models_dir = Path(models_dir)
        if not models_dir.is_dir():
            raise FileNotFoundError(f"models directory {models_dir} does not exist")
        dirs = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST_FILE}"))
        if not dirs:
            raise FileNotFoundError(f"no model directories (with {MANIFEST_FILE}) in {models_dir}")
        served, load_seconds = [], []
        for model_dir in dirs:
            started = time.perf_counter()
            model = LoadedModel.load(model_dir, config.device, config.intra_op_threads)
            served.append(ServedModel(model, config))
            load_seconds.append(time.perf_counter() - started)
        engine = cls(served, config, metrics)
        for model, seconds in zip(served, load_seconds, strict=True):
            engine._report.loaded(model, seconds)
        return engine

    # ----- catalogue -----------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [s.info(self._defaults[s.manifest.task] == s.manifest.name) for s in self._served]

    def _find(self, name: str, task: str, version: str = "") -> ServedModel:
        name = name or self._defaults.get(task, "")
        candidates = [s for s in self._served if s.manifest.name == name]
        if not candidates:
            known = ", ".join(sorted({s.manifest.name for s in self._served}))
            raise NotFound(f"unknown model {name!r} for task {task!r} (served: {known})")
        if version:
            candidates = [s for s in candidates if s.manifest.version == version]
            if not candidates:
                raise NotFound(f"model {name!r} has no version {version!r}")
        served = candidates[-1]  # the newest version
        if served.manifest.task != task:
            raise NotFound(f"model {name!r} serves {served.manifest.task}, not {task}")
        return served

    def resolve(self, name: str, task: str, version: str = "") -> ModelInfo:
        served = self._find(name, task, version)
        return served.info(self._defaults[task] == served.manifest.name)

    # ----- metrics hooks -------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def queue_length(self) -> int:
        return sum(len(s.scheduler.waiting) for s in self._served)

    def running_rows(self) -> int:
        return sum(s.runner.rows for s in self._served)

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._loop, name="attnserve-engine", daemon=True)
            self._worker.start()

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; with `drain`, let queued and running ones finish first."""
        with self._cond:
            self._draining = True
            self._stopping = True
            self._abort = not drain
            self._cond.notify_all()
        if self._worker is None:  # never started: queued work still gets its answer or error
            await self.start()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join)
            self._worker = None

    def _has_work(self) -> bool:
        return any(s.scheduler.has_work() for s in self._served)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._has_work() and not self._stopping:
                    self._cond.wait()
                if self._abort:
                    self._fail_all(Unavailable("the server is shutting down"))
                    return
                if not self._has_work():
                    return
                plans = [s for s in self._served if s.scheduler.has_work()]
            for served in plans:
                self._step(served)

    def _fail_all(self, error: Exception) -> None:
        for served in self._served:
            for group in [*served.reset(), *served.scheduler.waiting]:
                group.emit(StepEvent(tokens=[], error=error))
            served.scheduler.waiting.clear()
            self._report.queue_state(served)

    def _step(self, served: ServedModel) -> None:
        try:
            with self._cond:
                plan = served.scheduler.schedule(time.monotonic())
                rows = served.scheduler.running_rows
            started = time.perf_counter()
            events = served.runner.execute(plan)
            seconds = time.perf_counter() - started
            with self._cond:
                for group, event in events:
                    if event.finish_reason:
                        served.scheduler.release(group)
                self._report.step(served, plan, events, rows, seconds, time.monotonic())
        except Exception as exc:  # a runtime fault fails that model's running requests only
            with self._cond:
                failed = served.reset()
                self._report.queue_state(served)
            events = [(g, StepEvent(tokens=[], error=RuntimeError(str(exc)))) for g in failed]
        for group, event in events:
            group.emit(event)

    # ----- requests ------------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        """Stream TokenDeltas, then one GenerationResult; errors are service.errors types."""
        served = self._find(request.model, request.task, request.version)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StepEvent] = asyncio.Queue()

        def emit(event: StepEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            group = await self._enqueue(served, request, emit)
        except ServeError as error:
            self._report.rejected(served, error)
            raise
        output = served.output(group)
        finished = False
        try:
            while not finished:
                for item in output.feed(await queue.get()):
                    finished = isinstance(item, GenerationResult)
                    yield item
        finally:
            if not finished:
                self._cancel(group)

    async def result(self, request: GenerationRequest) -> GenerationResult:
        """Run one request to its end and return its result alone (for unary RPCs); a caller
        that stops waiting (cancelled) frees the request's rows."""
        async with aclosing(self.generate(request)) as outputs:
            async for output in outputs:
                if isinstance(output, GenerationResult):
                    return output
        raise RuntimeError("the engine ended without a result")

    async def _enqueue(
        self, served: ServedModel, request: GenerationRequest, emit: Callable[[StepEvent], None]
    ) -> SequenceGroup:
        """Check and prepare the request, then queue it; ServeError if it cannot be served."""
        if self._draining:
            raise Unavailable("the server is draining and takes no new requests")
        if request.task == "captioning" and request.text:
            raise InvalidArgument("captioning takes an image, not text")
        if request.task == "summarization" and request.image:
            raise InvalidArgument("summarization takes text, not an image")
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise DeadlineExceeded("the request's deadline passed before it started")
        prepare = lambda: served.prepare(  # noqa: E731
            request.text, request.image, request.params, emit, request.deadline
        )
        group = await asyncio.to_thread(prepare) if request.image else prepare()
        self._submit(served, group)
        return group

    def _submit(self, served: ServedModel, group: SequenceGroup) -> None:
        with self._cond:
            if self._draining:
                raise Unavailable("the server is draining and takes no new requests")
            served.scheduler.add(group)
            self._report.queue_state(served)
            self._cond.notify_all()

    def _cancel(self, group: SequenceGroup) -> None:
        with self._cond:
            group.cancelled = True
            self._cond.notify_all()
