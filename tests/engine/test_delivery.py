"""Mailboxes hand a step's events, converted on the output thread, to asyncio consumers: in
order, once per step, and for unary requests once per request; a request's error ends its
outputs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.engine.delivery import Mailbox, Outbox
from service.engine.sequence import StepEvent
from service.errors import Unavailable

pytestmark = pytest.mark.timeout(30)


def _token(token: int, finish_reason: str | None = None) -> StepEvent:
    return StepEvent(tokens=[token], finish_reason=finish_reason)


def _on_step_thread(work) -> None:
    """Run `work` on another thread, as the engine's step thread posts and flushes."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


class _EventsAsOutputs:
    """Converts each event to itself (the real conversion, RequestOutput, is tested with the
    engine): what is under test here is the hand-off. A failed event raises, as RequestOutput
    raises the request's error."""

    def feed(self, event: StepEvent) -> list[StepEvent]:
        if event.error is not None:
            raise event.error
        return [event]


def _mailbox(outbox: Outbox, final_only: bool = False) -> Mailbox:
    mailbox = Mailbox(asyncio.get_running_loop(), outbox, final_only)
    mailbox.output = _EventsAsOutputs()
    return mailbox


async def _received(mailbox: Mailbox, outbox: Outbox) -> list[list]:
    """Every delivery the mailbox's queue holds once the output thread has handed over all it
    was given and the loop has run its callbacks."""
    outbox.close()
    await asyncio.sleep(0)
    batches = []
    while not mailbox.queue.empty():
        batches.append(mailbox.queue.get_nowait())
    return batches


def test_a_step_reaches_each_streaming_consumer_as_one_delivery_in_order():
    async def scenario():
        outbox = Outbox()
        first, second = (_mailbox(outbox) for _ in range(2))

        def step():
            first(_token(1))
            second(_token(7))
            first(_token(2))
            outbox.flush()

        _on_step_thread(step)
        return await _received(first, outbox), await _received(second, outbox)

    first, second = asyncio.run(scenario())
    assert [[e.tokens for e in batch] for batch in first] == [[[1], [2]]]
    assert [[e.tokens for e in batch] for batch in second] == [[[7]]]


def test_each_flush_delivers_only_what_was_posted_since_the_last():
    async def scenario():
        outbox = Outbox()
        mailbox = _mailbox(outbox)

        def steps():
            for token in (1, 2, 3):
                mailbox(_token(token))
                outbox.flush()
            outbox.flush()  # nothing new: no delivery

        _on_step_thread(steps)
        return await _received(mailbox, outbox)

    assert [[e.tokens for e in batch] for batch in asyncio.run(scenario())] == [[[1]], [[2]], [[3]]]


def test_a_final_only_consumer_gets_every_event_at_once_with_the_last():
    async def scenario():
        outbox = Outbox()
        mailbox = _mailbox(outbox, final_only=True)
        _on_step_thread(lambda: [(mailbox(_token(t)), outbox.flush()) for t in (4, 5)])
        before_end = await _received(mailbox, outbox)
        _on_step_thread(lambda: (mailbox(_token(6, finish_reason="eos")), outbox.flush()))
        return before_end, await _received(mailbox, outbox)

    before_end, at_end = asyncio.run(scenario())
    assert before_end == []
    assert [[e.tokens for e in batch] for batch in at_end] == [[[4], [5], [6]]]
    assert at_end[0][-1].finish_reason == "eos"


def test_an_error_ends_a_final_only_consumer_wait():
    async def scenario():
        outbox = Outbox()
        mailbox = _mailbox(outbox, final_only=True)
        failure = StepEvent(tokens=[], error=Unavailable("shutting down"))
        _on_step_thread(lambda: (mailbox(_token(4)), mailbox(failure), outbox.flush()))
        return await _received(mailbox, outbox)

    (batch,) = asyncio.run(scenario())
    assert [e.tokens for e in batch[:-1]] == [[4]]
    assert isinstance(batch[-1], Unavailable)
