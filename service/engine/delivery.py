"""Hand-off of StepEvents from the engine's step thread to the asyncio consumers of requests.

Every wake-up of an event loop from another thread costs more than the event itself: a write to
the loop's self-pipe, then the GIL passes to the loop's thread while it runs the consumer, and
the step thread waits to get it back (measured: ~0.5 ms per wake-up on 2 cores, 30 ms over a
64-token request; docs/benchmarks.md, "Profile"). So the step thread posts each event to its
request's `Mailbox` and, once per step, `Outbox.flush` wakes each loop once with everything
that step produced. A consumer that wants only the result (unary RPCs) is woken once, at the
end, with all of its request's events, in order, exactly as a streaming consumer gets them.
"""

from __future__ import annotations

import asyncio

from service.engine.sequence import StepEvent

Delivery = tuple[asyncio.Queue[list[StepEvent]], list[StepEvent]]


def _deliver(deliveries: list[Delivery]) -> None:
    """Runs on the consumers' event loop: each batch of events goes to its request's queue."""
    for queue, events in deliveries:
        queue.put_nowait(events)


class Outbox:
    """The mailboxes with events not yet handed over; used by the step thread alone."""

    def __init__(self) -> None:
        self._ready: list[Mailbox] = []

    def mark_ready(self, mailbox: Mailbox) -> None:
        self._ready.append(mailbox)

    def flush(self) -> None:
        """Wake each consumer's event loop once, with every event posted since the last flush."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Delivery]] = {}
        for mailbox in self._ready:
            by_loop.setdefault(mailbox.loop, []).append((mailbox.queue, mailbox.take()))
        self._ready.clear()
        for loop, deliveries in by_loop.items():
            loop.call_soon_threadsafe(_deliver, deliveries)


class Mailbox:
    """One request's events on their way from the step thread to its consumer on `loop`.

    Called with each StepEvent (it is the request's `emit`); the consumer awaits `queue`, which
    receives the events as lists, in the order they were posted. With `final_only`, events are
    held until the request's last one (an answer or an error).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, outbox: Outbox, final_only: bool = False
    ) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[list[StepEvent]] = asyncio.Queue()
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
