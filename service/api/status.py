"""Ending an RPC with the status code of the error that stopped it.

The code comes from service.errors' table alone. A ServeError's message goes to the client as
the status details; anything else is a server fault: logged with its traceback, answered
INTERNAL without internals.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from service.errors import status_code_for

log = logging.getLogger(__name__)


async def abort_with(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    """Abort the RPC with the code and message `error` stands for."""
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.error("request failed on a server fault", exc_info=error)
        await context.abort(code, "internal server error (see the server log)")
    await context.abort(code, str(error))
