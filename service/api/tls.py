"""The server's port: TLS (or mutual TLS) from PEM files when configured, plaintext otherwise.

With a certificate the port speaks only TLS: a plaintext client cannot connect at all. With a
client CA, a client must also present a certificate that CA signed (mutual TLS); one without is
refused during the handshake, before any RPC runs.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from service.config import SecuritySettings, SettingsError

_PEM_MARKER = b"-----BEGIN "


def _read_pem(name: str, path: Path) -> bytes:
    """The file's bytes; SettingsError if it cannot be read or holds no PEM block."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {name} {str(path)!r}: {exc.strerror}") from exc
    if _PEM_MARKER not in data:
        raise SettingsError(f"{name} {str(path)!r} is not a PEM file")
    return data


def server_credentials(security: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the settings' files; None when TLS is off."""
    if security.tls_cert is None or security.tls_key is None:
        return None
    chain = _read_pem("tls_cert", security.tls_cert)
    key = _read_pem("tls_key", security.tls_key)
    client_ca = None
    if security.tls_client_ca is not None:
        client_ca = _read_pem("tls_client_ca", security.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def bind_port(server: grpc.aio.Server, address: str, security: SecuritySettings) -> int:
    """Listen on `address` (TLS if configured); the bound port (the free one picked for :0)."""
    credentials = server_credentials(security)
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc's "Failed to bind to address ...": taken, or no such host
        raise OSError(f"the gRPC port {address} (taken, or not an address here?): {exc}") from None
