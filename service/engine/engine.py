"""The async generation engine the transports talk to (docs/architecture.md).

The event loop only moves bytes: a request is prepared (tokenized, or its image decoded) in a
bounded pool of prep threads, one step thread runs every model's step loop (ONNX Runtime
releases the GIL while it computes), and one output thread turns its events into TokenDeltas
and results (service.engine.delivery), waking each event loop once per step, and a unary
request's consumer only once, at its end. A consumer that stops iterating marks its request
cancelled, and the next step frees its rows.

Model versions change only by swapping the whole ModelTable (`reload`): the step thread never
loads or unloads anything, it steps the current table's models and the replaced ones still
finishing their requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path

from service.engine.config import EngineConfig
from service.engine.delivery import Mailbox, Outbox
from service.engine.metrics_reporter import EngineReporter
from service.engine.model_repository import ModelRepository, Reload
from service.engine.model_table import ModelTable
from service.engine.sequence import SequenceGroup, StepEvent
from service.engine.served_model import ModelInfo, ServedModel
from service.engine.types import GenerationRequest, GenerationResult, TokenDelta
from service.engine.validation import check_input_size
from service.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    ServeError,
    Unavailable,
)
from service.metrics import ServerMetrics
from service.runtime.heap import freeze_heap, thaw_heap
from service.runtime.tasks import Task

__all__ = ["Engine", "EngineConfig", "ModelInfo"]

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        served: list[ServedModel],
        config: EngineConfig,
        metrics: ServerMetrics | None = None,
        repository: ModelRepository | None = None,
    ) -> None:
        self.config = config
        self.repository = repository  # where `reload` finds new versions; None: fixed models
        self._report = EngineReporter(metrics or ServerMetrics(), config.kv_budget_bytes)
        self._table = ModelTable(served)  # what new requests resolve against
        self._retiring: tuple[ServedModel, ...] = ()  # replaced, finishing their requests
        self._requests: Counter[ServedModel] = Counter()  # generate() calls alive per model
        self._refreeze_due = False  # the heap was thawed for unloaded versions (_unload_idle)
        self._cond = threading.Condition()
        self._outbox = Outbox()  # the step thread's events, handed over once per step
        # Tokenizing and image decoding run here, off the event loop, a bounded number at once.
        self._prep_pool = ThreadPoolExecutor(config.prep_workers, "attnserve-prep")
        self._preparing = 0  # requests in or waiting for the pool (event-loop side only)
        self._worker: threading.Thread | None = None
        # when the step thread, busy, last finished a step (or found work); None while idle
        self._progress: float | None = None
        self._draining = False
        self._stopping = False
        self._abort = False  # stop without drain: fail what is left instead of finishing it

    @classmethod
    def load(
        cls,
        models_dir: Path,
        config: EngineConfig,
        metrics: ServerMetrics | None = None,
        keep_versions: int = 1,
    ) -> Engine:
        """The models under `models_dir` (either layout, see model_repository), the
        `keep_versions` highest versions of each; their metrics go to `metrics` (a private
        ServerMetrics if None). OSError or ValueError if any of them cannot be served."""
        config.validate()
        repository = ModelRepository(Path(models_dir), config, keep_versions)
        loaded = repository.load_initial()
        engine = cls([item.served for item in loaded], config, metrics, repository)
        for item in loaded:
            engine._report.loaded(item.served, item.seconds)
        return engine

    # ----- catalogue -----------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self._table.infos()

    def _find(self, name: str, task: str, version: str = "") -> ServedModel:
        """A replaced version still answers requests naming it until it is unloaded, so that
        one resolved just before a swap is never refused."""
        return self._table.find(name, task, version, self._retiring)

    def resolve(self, name: str, task: str, version: str = "") -> ModelInfo:
        served = self._find(name, task, version)
        return served.info(self._table.is_default(served))

    # ----- reloads -------------------------------------------------------------------------

    async def watch_repository(self, interval_s: float) -> None:
        """Reload every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
            except Exception:  # a bug in one poll must not end polling
                log.exception("reloading the models failed; the serving versions stay")

    async def reload(self) -> None:
        """One poll of the repository: unload replaced versions no request uses any more, load
        new ones (on a worker thread) and swap them in. A version replaced now is unloaded at
        the next poll at the earliest, so a request that resolved it just before the swap
        (KServe pins the version before its elements start) still finds it."""
        if self.repository is None or self._draining:
            return
        self._unload_idle()
        change = await asyncio.to_thread(self.repository.reconcile, self._table.served)
        if change is not None and not self._draining:
            self._install(change)

    def _install(self, change: Reload) -> None:
        new_table = ModelTable(change.serving)
        with self._cond:
            old = self._table
            self._table = new_table
            replaced = tuple(s for s in old.served if s not in new_table.served)
            self._retiring = (*self._retiring, *replaced)
        for item in change.loaded:
            self._report.loaded(item.served, item.seconds)
            manifest = item.served.manifest
            log.info("serving %s version %s", manifest.name, manifest.version)
        for served in replaced:
            log.info("retiring %s version %s", served.manifest.name, served.manifest.version)

    def _unload_idle(self) -> None:
        """Drop retiring versions with no request left; ONNX Runtime frees them with the last
        reference, here and not on the step thread. A frozen heap (service.runtime.heap) is
        thawed when versions are dropped, so that the collector can free cycles among their
        objects, and frozen again at a later poll with no version retiring."""
        if self._refreeze_due and not self._retiring:
            log.info("heap frozen again: %d objects", freeze_heap())
            self._refreeze_due = False
        idle = tuple(s for s in self._retiring if not self._requests[s])
        if not idle:
            return
        with self._cond:
            self._retiring = tuple(s for s in self._retiring if s not in idle)
        for served in idle:
            self._report.unloaded(served)
            log.info("unloaded %s version %s", served.manifest.name, served.manifest.version)
        if thaw_heap():
            log.info("heap thawed until the next poll: the unloaded versions' cycles can go")
            self._refreeze_due = True

    def _stepped(self) -> tuple[ServedModel, ...]:
        """Every model the step loop runs: the table's and the retiring ones."""
        return (*self._table.served, *self._retiring)

    # ----- metrics hooks -------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def queue_length(self) -> int:
        return sum(len(s.scheduler.waiting) for s in self._stepped())

    def running_rows(self) -> int:
        return sum(s.runner.rows for s in self._stepped())

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
        await asyncio.to_thread(self._outbox.close)
        self._prep_pool.shutdown(wait=False, cancel_futures=True)

    def stalled_seconds(self, now: float) -> float:
        """How long the step thread, with work to do, has not finished a step (infinity if it
        died while the engine runs); 0 while it idles without work."""
        if self._worker is not None and not self._worker.is_alive() and not self._stopping:
            return float("inf")
        progress = self._progress
        return 0.0 if progress is None else max(0.0, now - progress)

    def _has_work(self) -> bool:
        return any(s.scheduler.has_work() for s in self._stepped())

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._has_work() and not self._stopping:
                    self._progress = None
                    self._cond.wait()
                if self._progress is None:
                    self._progress = time.monotonic()
                if self._abort:
                    self._fail_all(Unavailable("the server is shutting down"))
                    return
                if not self._has_work():
                    return
                plans = [s for s in self._stepped() if s.scheduler.has_work()]
            for served in plans:
                self._step(served)

    def _fail_all(self, error: Exception) -> None:
        for served in self._stepped():
            for group in [*served.reset(), *served.scheduler.waiting]:
                group.emit(StepEvent(tokens=[], error=error))
            served.scheduler.waiting.clear()
            self._report.queue_state(served)
        self._outbox.flush()

    def _step(self, served: ServedModel) -> None:
        """One step of `served`: the same plan -> execute -> update as ServedModel.step, with
        the lock held only where the event loop's threads meet the scheduler (its queue), and
        timing and metrics around it."""
        try:
            with self._cond:
                plan = served.plan(time.monotonic())
                rows = served.scheduler.running_rows
            started = time.perf_counter()
            events = served.update(plan, served.execute(plan))
            seconds = time.perf_counter() - started
            counters = served.model.counters.take()
            with self._cond:
                self._report.step(served, plan, events, rows, seconds, time.monotonic(), counters)
        except Exception as exc:  # a runtime fault fails that model's running requests only
            with self._cond:
                failed = served.reset()
                self._report.queue_state(served)
            log.exception(
                "a decode step of %s failed; its %d running requests fail, the server goes on",
                served.manifest.name,
                len(failed),
            )
            events = [(g, StepEvent(tokens=[], error=RuntimeError(str(exc)))) for g in failed]
        self._progress = time.monotonic()
        for group, event in events:
            group.emit(event)
        self._outbox.flush()

    # ----- requests ------------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        """Stream TokenDeltas, then one GenerationResult; errors are service.errors types."""
        async with aclosing(self._generate(request, final_only=False)) as items:
            async for item in items:
                yield item

    async def result(self, request: GenerationRequest) -> GenerationResult:
        """Run one request to its end and return its result alone (for unary RPCs); a caller
        that stops waiting (cancelled) frees the request's rows. The step thread hands the
        request's events over once, at its end, instead of once per token."""
        async with aclosing(self._generate(request, final_only=True)) as outputs:
            async for output in outputs:
                if isinstance(output, GenerationResult):
                    return output
        raise RuntimeError("the engine ended without a result")

    def check_room(self, request: GenerationRequest, count: int) -> None:
        """Refuse at once, as a whole, `count` requests like `request` (a KServe call's elements,
        which fail together) that would not all fit in its model's queue now, rather than
        prepare and queue some, then cancel them when one is refused. More than the queue holds
        can never fit: InvalidArgument. Each element is still checked as it is queued."""
        if self._draining:
            return  # each element is refused as Unavailable
        served = self._find(request.model, request.task, request.version)
        try:
            if count > self.config.max_queue:
                raise InvalidArgument(
                    f"this call has {count} elements, more than the request queue holds "
                    f"({self.config.max_queue}, --max-queue): send at most "
                    f"{self.config.max_queue} per call"
                )
            self._check_room(served, count)
        except ServeError as error:
            for _ in range(count):
                self._report.rejected(served, error)
            raise

    def _check_room(self, served: ServedModel, count: int = 1) -> None:
        """ResourceExhausted at once when `count` more requests fit neither in `served`'s wait
        queue nor beside those being prepared (both bounded by --max-queue)."""
        served.scheduler.check_room(count)
        if self._preparing + count <= self.config.max_queue:
            return
        if count == 1:
            raise ResourceExhausted(
                f"{self._preparing} requests are being prepared, as many as the queue holds; "
                "retry later"
            )
        raise ResourceExhausted(
            f"{self._preparing} requests are being prepared: this call's {count} elements do "
            f"not fit beside them ({self.config.max_queue}, --max-queue); retry later"
        )

    async def _generate(
        self, request: GenerationRequest, final_only: bool
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        served = self._find(request.model, request.task, request.version)
        self._requests[served] += 1  # keeps a replaced version loaded until this ends
        try:
            async with aclosing(self._generate_on(served, request, final_only)) as items:
                async for item in items:
                    yield item
        finally:
            self._requests[served] -= 1
            if not self._requests[served]:
                del self._requests[served]

    async def _generate_on(
        self, served: ServedModel, request: GenerationRequest, final_only: bool
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        mailbox = Mailbox(asyncio.get_running_loop(), self._outbox, final_only)
        try:
            group = await self._enqueue(served, request, mailbox)
        except ServeError as error:
            self._report.rejected(served, error)
            raise
        finished = False
        try:
            while not finished:
                for output in await mailbox.queue.get():
                    if isinstance(output, Exception):
                        raise output
                    finished = isinstance(output, GenerationResult)
                    yield output
        finally:
            if not finished:
                self._cancel(group)

    async def _enqueue(
        self, served: ServedModel, request: GenerationRequest, mailbox: Mailbox
    ) -> SequenceGroup:
        """Check and prepare the request (in the prep pool), then queue it; ServeError if it
        cannot be served."""
        if self._draining:
            raise Unavailable("the server is draining and takes no new requests")
        if request.task == Task.CAPTIONING and request.text:
            raise InvalidArgument("captioning takes an image, not text")
        if request.task == Task.SUMMARIZATION and request.image:
            raise InvalidArgument("summarization takes text, not an image")
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise DeadlineExceeded("the request's deadline passed before it started")
        check_input_size(request.text, request.image, self.config, request.prompt)
        self._check_room(served)  # a full queue refuses at once, before any preparing

        def prepare() -> SequenceGroup:
            group = served.prepare(
                request.text,
                request.image,
                request.params,
                mailbox,
                request.deadline,
                request.prompt,
            )
            mailbox.output = served.output(group)
            return group

        self._preparing += 1
        try:
            group = await asyncio.get_running_loop().run_in_executor(self._prep_pool, prepare)
        finally:
            self._preparing -= 1
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
