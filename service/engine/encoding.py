"""Newcomers' encoders run beside the decode steps, on a thread of their own.

Inside a step, an encoder run freezes every running stream for its whole length (hundreds of
milliseconds for long inputs on CPU). Beside the steps, ONNX Runtime runs it on another thread
(it releases the GIL) while the running streams keep decoding, more slowly while they share the
cores; the newcomers join the decode batch at the first step after their encoder finished. Runs
are done one at a time, in admission order, so FIFO order holds. See docs/benchmarks.md for what
this measured on the 2-core CPU.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from service.engine.batch import DecodeBatch
from service.engine.sequence import SequenceGroup
from service.runtime.cores import CpuGroups, pin_current_thread
from service.runtime.kv_tensors import Tensor


@dataclass
class EncoderRun:
    """One encoder run over the requests admitted in one step, and their decoder rows."""

    batch: DecodeBatch
    seconds: float
    tokens: int  # requests x the longest input, as the scheduler's budget counts them
    cross_room: list[Tensor] | None = None  # made beside the steps for the join, if it needs it


Failure = tuple[SequenceGroup, Exception]  # a newcomer the model failed on, and why
Encoded = tuple[list[EncoderRun], list[Failure]]
MakeRoom = Callable[[DecodeBatch, list[DecodeBatch]], list[Tensor] | None]


class BackgroundEncoder:
    """Encoder runs submitted in admission order, collected when done. `encode` isolates model
    faults (a newcomer whose input the model cannot run comes back as a failure, the others as
    runs), so beside the steps, as inside them, one bad input fails only its own request."""

    def __init__(
        self,
        encode: Callable[[list[SequenceGroup]], Encoded],
        make_room: MakeRoom,
        nice: int = 0,
        cpus: CpuGroups = (),
    ) -> None:
        """`make_room(batch, waiting)`: on the encoder's thread, after each run, the buffers
        the join of `batch` will need (None if none), knowing the runs done before it that have
        not joined yet (`waiting`). `nice`: added to the encoder thread's nice value, so that
        the kernel gives the decode steps' threads the cores first (EngineConfig.encoder_nice).
        `cpus`: the encoder's cores, the thread's only ones (EngineConfig.pin_cores).
        """
        self._encode = encode
        self._make_room = make_room
        self._thread = ThreadPoolExecutor(
            1,
            thread_name_prefix="attnserve-encoder",
            initializer=_set_up_thread,
            initargs=(nice, cpus),
        )
        self._pending: deque[Future[Encoded]] = deque()
        self._encoding: set[SequenceGroup] = set()  # submitted, not yet collected
        self._left: set[SequenceGroup] = set()  # cancelled or expired while being encoded
        self._waiting: list[DecodeBatch] = []  # encoded, not yet collected (both threads)
        self._waiting_lock = threading.Lock()

    def submit(self, groups: list[SequenceGroup]) -> None:
        self._encoding.update(groups)
        self._pending.append(self._thread.submit(self._run, groups))

    def _run(self, groups: list[SequenceGroup]) -> Encoded:
        """On the encoder's thread: encode, then make each run's room for its join."""
        runs, failed = self._encode(groups)
        for run in runs:
            with self._waiting_lock:
                waiting = list(self._waiting)
            run.cross_room = self._make_room(run.batch, waiting)  # pages faulted in: no lock
            with self._waiting_lock:
                self._waiting.append(run.batch)
        return runs, failed

    def leave(self, groups: Collection[SequenceGroup]) -> None:
        """Requests that left the engine: those still being encoded never join the batch."""
        self._left.update(g for g in groups if g in self._encoding)

    def finished(self, wait: bool) -> Encoded:
        """The runs done by now, in order (with `wait`, at least the oldest submission), their
        requests that left meanwhile filtered out, and the newcomers the model failed on. An
        unexpected exception of a run is raised here."""
        runs: list[EncoderRun] = []
        failed: list[Failure] = []
        collected = False
        while self._pending and (self._pending[0].done() or (wait and not collected)):
            done, failures = self._pending.popleft().result()
            collected = True
            for run in done:
                with self._waiting_lock:
                    self._waiting.remove(run.batch)
                self._encoding.difference_update(run.batch.requests)
                leaving = [g for g in run.batch.requests if g in self._left]
                self._left.difference_update(leaving)
                kept = run.batch.filter(leaving) if leaving else run.batch
                if kept is not None:
                    runs.append(replace(run, batch=kept))
            for group, error in failures:
                self._encoding.discard(group)
                if group in self._left:
                    self._left.discard(group)  # it already left: nobody to tell
                else:
                    failed.append((group, error))
        return runs, failed

    def clear(self) -> None:
        """Forget every pending run (after a runtime failure): their results are dropped."""
        self._pending.clear()
        self._encoding.clear()
        self._left.clear()
        with self._waiting_lock:
            self._waiting.clear()


def _set_up_thread(nice: int, cpus: CpuGroups) -> None:
    """Pin the encoder's thread to `cpus` and raise its nice value by `nice` (Linux: both are
    per thread; raising the nice value needs no privilege, lowering it back would)."""
    pin_current_thread(cpus)
    if nice > 0 and hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + nice, 19))
