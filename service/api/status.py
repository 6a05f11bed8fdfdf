"""What the client is told when an RPC (or one request of a stream) fails.

The code is the one service.errors names for the error (`status_name`), mapped here, the only
place that knows gRPC's codes. A ServeError's message goes to the client as
the status details; anything else is a server fault: logged with its traceback, answered
INTERNAL without internals.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

import grpc

from service.errors import status_name

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error (see the server log)"
# Messages may quote what the client sent (a model name, a word): cut there, since gRPC sends
# the details in a header and clients refuse headers over 16 KiB (grpcio's default), which would
# turn a NOT_FOUND into RESOURCE_EXHAUSTED, a code clients are told to retry.
MAX_MESSAGE_CHARS = 1000


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an error; INTERNAL for anything not a ServeError."""
    return grpc.StatusCode[status_name(error)]


def client_message(error: Exception) -> str:
    """The message the client gets for `error`; a server fault is logged here, not shown."""
    if status_code_for(error) is grpc.StatusCode.INTERNAL:
        log.error("request failed on a server fault", exc_info=error)
        return INTERNAL_MESSAGE
    message = str(error)
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... ({len(message) - MAX_MESSAGE_CHARS:,} characters cut)"


async def abort_with(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    """Abort the RPC with the code and message `error` stands for. An RPC that already ended
    (its deadline passed while the engine was stopping it too) has no one to tell: it ends as
    cancelled, instead of a status grpc can no longer send (and would log as an error)."""
    remaining = context.time_remaining()
    if context.done() or (remaining is not None and remaining <= 0):
        raise asyncio.CancelledError
    await context.abort(status_code_for(error), client_message(error))
