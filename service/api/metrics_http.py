"""The Prometheus `/metrics` endpoint: plain HTTP by default, or TLS with the server's own
certificate (`--metrics-tls`) and/or the gRPC port's bearer tokens (`--metrics-auth`), on its own
bind address (`--metrics-host`). docs/security.md says what is open by default and why.

Served by a threaded WSGI server on daemon threads, so a slow scraper never touches the event
loop or the step thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from service.api.interceptors.auth import BearerTokenInterceptor
from service.metrics import ServerMetrics

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
WILDCARD_IPV4, WILDCARD_IPV6 = "0.0.0.0", "::"

log = logging.getLogger(__name__)


# A connection must be done (TLS handshake, request, answer) within this: a client that
# connects and says nothing, or trickles its request a byte at a time, gives its thread back
# then. A scrape takes milliseconds (Prometheus's own scrape_timeout is 10 s by default).
CONNECTION_S = 30.0


def _shut_down(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile
        socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        # The deadline for the whole connection: shutting the socket down ends any read or
        # write in progress, the TLS handshake's too (the plain socket's shutdown: TLS's would
        # change its state from this other thread).
        self._deadline = threading.Timer(CONNECTION_S, _shut_down, (self.connection,))
        self._deadline.daemon = True
        self._deadline.start()

    def handle(self) -> None:
        """A client cut off at the deadline, breaking off its TLS handshake or resetting has
        its connection closed, without the traceback socketserver would print."""
        try:
            super().handle()
        except OSError as error:  # ssl.SSLError, ConnectionResetError, ...
            log.debug("/metrics connection from %s ended: %s", self.client_address, error)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes are not logged (every 15 s, forever)."""


def _with_token_check(app: WsgiApp, tokens: list[str]) -> WsgiApp:
    """`app` behind the bearer-token check of the gRPC port: 401 without a token, 403 with a
    wrong one, each with the same message a gRPC client gets."""
    check = BearerTokenInterceptor(tokens)

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION")
        refusal = check.refusal([("authorization", header)] if header else [])
        if refusal is None:
            return app(environ, start_response)
        status = "401 Unauthorized" if refusal.status == "UNAUTHENTICATED" else "403 Forbidden"
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if refusal.status == "UNAUTHENTICATED":
            headers.append(("WWW-Authenticate", "Bearer"))
        start_response(status, headers)
        return [f"{refusal}\n".encode()]

    return checked


class _Ipv4Server(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Ipv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # on the wildcard, IPv4 clients too (as ::ffff:a.b.c.d)
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _bind(host: str, port: int, app: WsgiApp) -> ThreadingWSGIServer:
    """The WSGI server bound to host:port. IPv4's wildcard also takes IPv6 where the machine
    has it (one dual-stack socket on `::`), as the gRPC port does: on an IPv6 cluster
    Prometheus scrapes the pod's IPv6 address."""
    if host == WILDCARD_IPV4 and socket.has_ipv6:
        try:
            return _make_server(WILDCARD_IPV6, port, app)
        except OSError:
            pass  # IPv6 disabled or not there: the IPv4 wildcard alone
    return _make_server(host, port, app)


def _make_server(host: str, port: int, app: WsgiApp) -> ThreadingWSGIServer:
    server_class = _Ipv6Server if ":" in host else _Ipv4Server
    return make_server(host.strip("[]"), port, app, server_class, handler_class=_QuietHandler)


def start_metrics_server(
    metrics: ServerMetrics,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
    tokens: list[str] | None = None,
) -> tuple[ThreadingWSGIServer, int]:
    """Serve /metrics on host:port from daemon threads; port 0 picks a free port. `tls`: (cert,
    key) PEM files; `tokens`: accepted bearer tokens (None: no check).

    Returns the server (stop it with `shutdown()` then `server_close()`) and its bound port.
    """
    app: WsgiApp = make_wsgi_app(metrics.exposition_registry())
    if tokens is not None:
        app = _with_token_check(app, tokens)

    server = _bind(host, port, app)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
        # The handshake happens on each connection's own thread: a client that connects and
        # says nothing cannot hold up the accepting thread.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, name="attnserve-metrics", daemon=True).start()
    return server, server.server_port
