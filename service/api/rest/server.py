"""The HTTP port: uvicorn serving the REST app on the gRPC server's event loop.

The socket is bound at construction (so port 0 is resolved, and a taken port fails at once
with OSError, like the gRPC port), uvicorn serves it once `start` is called. TLS comes from the
same files as the gRPC port's: with a client CA, a client certificate is required (mutual
TLS). SIGTERM/SIGINT stay the gRPC server's (they start the drain), so uvicorn installs no
signal handlers; `stop` is called at the end of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from service.api.rest.connection import HeadTimedH11Protocol
from service.config import ServerSettings

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0


class _EmbeddedUvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The process's signals belong to the gRPC server's drain, not to uvicorn."""
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose accepted connections get TCP_NODELAY. asyncio sets it only
    on sockets that say IPPROTO_TCP, and `socket.create_server` makes them with protocol 0
    (accepted connections inherit it): responses then waited for the client's delayed ACK,
    40 ms per request on a reused connection (tritonclient.http, perf_analyzer -i http)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        bound = socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise OSError(f"the HTTP port {host}:{port}: {exc.strerror or exc}") from None
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=bound.detach())


class RestServer:
    """uvicorn on a socket bound to (settings.host, `port`), TLS as settings.security says."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, port: int) -> None:
        self.socket = _bind(settings.host, port)
        self.port: int = self.socket.getsockname()[1]
        security = settings.security
        tls = {}
        if security.tls:
            tls = {"ssl_certfile": str(security.tls_cert), "ssl_keyfile": str(security.tls_key)}
            if security.tls_client_ca is not None:
                tls["ssl_ca_certs"] = str(security.tls_client_ca)
                tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        self.scheme = "https" if security.tls else "http"
        config = uvicorn.Config(
            app,
            log_config=None,  # the server's logging is configured once, by `attnserve serve`
            access_log=False,  # requests carry users' texts: nothing logged by default
            lifespan="off",
            http=HeadTimedH11Protocol,  # a deadline for each request's head (slowloris)
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
            **tls,
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._serving: asyncio.Task | None = None

    async def start(self) -> None:
        self._serving = asyncio.ensure_future(self._uvicorn.serve(sockets=[self.socket]))
        while not self._uvicorn.started and not self._serving.done():
            await asyncio.sleep(0.01)
        if self._serving.done():  # e.g. a TLS file that cannot be loaded
            self._serving.result()
        log.info("HTTP/REST on %s://%s", self.scheme, _address(self.socket))

    async def stop(self) -> None:
        """Close the port and wait (a few seconds at most) for open responses to end."""
        if self._serving is None:
            self.socket.close()
            return
        self._uvicorn.should_exit = True
        await self._serving


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
