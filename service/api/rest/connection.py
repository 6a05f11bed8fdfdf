"""uvicorn's HTTP/1.1 connection (h11) with a deadline for each request's head.

uvicorn closes a keep-alive connection left idle after a response, and our handlers answer 408
to a body that stops coming (handlers.BODY_IDLE_S), but nothing bounded the head (request line
and headers): a client that connected and sent nothing, or sent a header line every few
seconds, held its connection and a file descriptor for good (slowloris). A request's head must
now be all there within HEAD_S of the connection opening or of the previous answer (the rest
of an answered request's unread body too), as nginx's `client_header_timeout` and
`lingering_time` ask; otherwise the connection is closed, with a 408 first when part of a
request's head came.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_S = 30.0


def _timed_out_answer(seconds: float) -> bytes:
    body = json.dumps(
        {"error": f"the request line and headers did not all arrive within {seconds:g} s"}
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HeadTimedH11Protocol(H11Protocol):
    """H11Protocol whose connection waits at most HEAD_S for each request's head."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """The timer runs while the connection waits for a request's head (h11's IDLE: none
        begun, or one begun but its headers incomplete) and stops once the head is parsed. It
        also runs while the body of a request already answered is read and thrown away (an early
        404, 408 or 413): the rest of that body must come within the same deadline as the next
        head, else a client trickling it held the connection for good."""
        their, ours = self.conn.their_state, self.conn.our_state
        draining = ours is h11.DONE and their is h11.SEND_BODY
        waiting = (their is h11.IDLE or draining) and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_S, self._head_timed_out, HEAD_S)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self, seconds: float) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            partial, _ = self.conn.trailing_data  # bytes of a head not yet complete
            if partial:
                self.transport.write(_timed_out_answer(seconds))
        elif not (self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY):
            return  # a request is in progress (the timer is cancelled then; never cut one)
        self.transport.close()
