"""Hand-off of StepEvents from the engine's step thread, through the output thread, to the
asyncio consumers of requests.

The event loop only moves bytes: turning a request's StepEvents into TokenDeltas and its
GenerationResult (detokenizing, attributions) runs on one output thread, never on the event loop
and never on the step thread, whose every millisecond delays all rows.

Every wake-up of an event loop from another thread costs more than the event itself: a write to
the loop's self-pipe, then the GIL passes to the loop's thread while it runs the consumer
(measured: ~0.5 ms per wake-up on 2 cores; docs/benchmarks.md, "Profile"). So the step thread
posts each event to its request's `Mailbox` and, once per step, `Outbox.flush` hands everything
that step produced to the output thread, which converts it and wakes each loop once. A consumer
that wants only the result (unary RPCs) is woken once, at the end, with all of its request's
outputs, in order, exactly as a streaming consumer gets them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import TYPE_CHECKING

from service.engine.sequence import StepEvent
from service.engine.types import GenerationResult, TokenDelta

if TYPE_CHECKING:
    from service.engine.request_output import RequestOutput

Output = TokenDelta | GenerationResult | Exception  # an Exception ends the request with it
Delivery = tuple[asyncio.Queue[list[Output]], list[Output]]
_STOP = None


def _deliver(deliveries: list[Delivery]) -> None:
    """Runs on the consumers' event loop: each batch of outputs goes to its request's queue."""
    for outputs_queue, outputs in deliveries:
        outputs_queue.put_nowait(outputs)


class Outbox:
    """The mailboxes with events not yet handed over (used by the step thread alone), and the
    output thread that converts and delivers them."""

    def __init__(self) -> None:
        self._ready: list[Mailbox] = []
        self._handed: queue.SimpleQueue[list[tuple[Mailbox, list[StepEvent]]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def mark_ready(self, mailbox: Mailbox) -> None:
        self._ready.append(mailbox)

    def flush(self) -> None:
        """Hand every event posted since the last flush to the output thread."""
        if not self._ready:
            return
        handed = [(mailbox, mailbox.take()) for mailbox in self._ready]
        self._ready.clear()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._convert_and_deliver, name="attnserve-output", daemon=True
            )
            self._thread.start()
        self._handed.put(handed)

    def close(self) -> None:
        """Stop the output thread once it has delivered everything handed to it."""
        if self._thread is not None:
            self._handed.put(_STOP)
            self._thread.join()
            self._thread = None

    def _convert_and_deliver(self) -> None:
        while (handed := self._handed.get()) is not _STOP:
            by_loop: dict[asyncio.AbstractEventLoop, list[Delivery]] = {}
            for mailbox, events in handed:
                delivery = (mailbox.queue, mailbox.convert(events))
                by_loop.setdefault(mailbox.loop, []).append(delivery)
            for loop, deliveries in by_loop.items():
                if not loop.is_closed():  # a consumer whose loop ended wants nothing more
                    loop.call_soon_threadsafe(_deliver, deliveries)


class Mailbox:
    """One request's events on their way from the step thread to its consumer on `loop`.

    Called with each StepEvent (it is the request's `emit`); the consumer awaits `queue`, which
    receives the outputs of the events as lists, in the order they were posted. With
    `final_only`, events are held until the request's last one (an answer or an error).
    `output` turns the events into outputs; it is set before the request is queued.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, outbox: Outbox, final_only: bool = False
    ) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[list[Output]] = asyncio.Queue()
        self.output: RequestOutput | None = None
        self._outbox = outbox
        self._final_only = final_only
        self._held: list[StepEvent] = []
        self._ready = False  # in the outbox, waiting for the next flush

    def __call__(self, event: StepEvent) -> None:
        self._held.append(event)
        final = bool(event.finish_reason) or event.error is not None
        if not self._ready and (final or not self._final_only):
            self._ready = True
            self._outbox.mark_ready(self)

    def take(self) -> list[StepEvent]:
        """The events posted since the last take (called by `Outbox.flush`)."""
        held, self._held = self._held, []
        self._ready = False
        return held

    def convert(self, events: list[StepEvent]) -> list[Output]:
        """The outputs of `events` (on the output thread); a failure, the request's own or one
        in converting, ends the list and the request."""
        assert self.output is not None, "a request is queued only with its output set"
        outputs: list[Output] = []
        for event in events:
            try:
                outputs.extend(self.output.feed(event))
            except Exception as error:
                outputs.append(error)
                break
        return outputs
