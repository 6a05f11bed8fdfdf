"""Server settings: command-line flags first, then ATTNSERVE_* environment variables, then
defaults; checked once at start so a bad setting stops the server with one clear message.

Every setting `x_y` has the flag `--x-y` and the variable `ATTNSERVE_X_Y` (see docs/api.md).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service.engine.config import EngineConfig

ENV_PREFIX = "ATTNSERVE_"
MIB = 1 << 20
_MESSAGE_SLACK_BYTES = MIB  # room for a request's other fields around the largest image


class SettingsError(ValueError):
    """A flag or environment variable has a value the server cannot start with."""


@dataclass(frozen=True)
class SecuritySettings:
    """Who may connect and call: TLS from certificate files, an optional bearer-token check."""

    tls_cert: Path | None = None
    """PEM certificate chain the server presents; with tls_key set, the port speaks only TLS."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    auth_tokens_file: Path | None = None
    """File of accepted bearer tokens, one a line; unset = no token check."""
    auth_open_health: bool = True
    """Health checks need no token, so that probes and load balancers need no secret."""
    auth_open_reflection: bool = True
    """Server reflection needs no token (it describes the API, never serves it)."""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def validate(self) -> None:
        """Raise SettingsError naming the first bad or missing security setting."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and not self.tls:
            raise SettingsError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SettingsError(f"{name} {str(path)!r} is not a readable file")


@dataclass(frozen=True)
class ServerSettings:
    """Everything `attnserve serve` needs: where to listen, what to serve, how to stop."""

    models: Path
    """The models directory: DIR/<model>/model.json or DIR/<name>/<version>/model.json."""
    poll_seconds: float = 0.0
    """How often the models directory is rescanned for new, replaced or removed versions;
    0 = never (the models loaded at start are served until the server stops)."""
    keep_versions: int = 1
    """How many of each model's highest versions are loaded and served."""
    host: str = "0.0.0.0"
    """Address the gRPC server binds."""
    port: int = 50051
    """gRPC port; 0 picks a free one (tests)."""
    metrics_port: int = 9090
    """Port of the Prometheus /metrics endpoint."""
    metrics_host: str | None = None
    """Address /metrics binds; None = the gRPC host. Set 127.0.0.1 (or the pod IP) to keep it
    off other interfaces."""
    metrics_tls: bool = False
    """Serve /metrics over TLS with the gRPC port's certificate (needs tls_cert)."""
    metrics_auth: bool = False
    """/metrics needs one of the gRPC port's bearer tokens (needs auth_tokens_file)."""
    http_port: int | None = None
    """Port of the HTTP/REST API (v2 REST, our API as JSON; docs/http.md); None = off, 0 picks
    a free one (tests)."""
    otlp_endpoint: str | None = None
    """OTLP/gRPC collector that receives a trace of every request (docs/tracing.md), e.g.
    http://127.0.0.1:4317; None = no tracing."""
    drain_seconds: float = 30.0
    """On SIGTERM, how long running requests may take to finish before they are cut off."""
    stall_seconds: float = 120.0
    """A decode step running longer than this (or a dead step thread) turns health NOT_SERVING
    until steps move again, so liveness probes restart a hung server; 0 = off."""
    max_message_bytes: int | None = None
    """Largest request message gRPC accepts (RESOURCE_EXHAUSTED above it); None = the image
    cap plus 1 MiB, so an oversized image still reaches the engine's clearer check."""
    log_requests: bool = False
    """Log every request's contents (texts, parameters, image sizes); off: never logged."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Engine limits and runtime choices (device, threads, batch rows, queue, caps)."""
    security: SecuritySettings = field(default_factory=SecuritySettings)
    """TLS and bearer-token settings."""

    @property
    def address(self) -> str:
        """host:port as gRPC wants it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def receive_limit_bytes(self) -> int:
        """grpc.max_receive_message_length: the setting, else room for the largest image."""
        if self.max_message_bytes is not None:
            return self.max_message_bytes
        return self.engine.max_image_bytes + _MESSAGE_SLACK_BYTES

    def validate(self) -> None:
        """Raise SettingsError naming the first bad setting."""
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise SettingsError(f"{name} must be between 0 and 65535, got {value}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise SettingsError(f"http_port must be between 0 and 65535, got {self.http_port}")
        if self.drain_seconds < 0:
            raise SettingsError(f"drain_seconds must be >= 0, got {self.drain_seconds}")
        if self.stall_seconds < 0:
            raise SettingsError(f"stall_seconds must be >= 0 (0 = off), got {self.stall_seconds}")
        if self.poll_seconds < 0:
            raise SettingsError(f"poll_seconds must be >= 0 (0 = off), got {self.poll_seconds}")
        if self.keep_versions < 1:
            raise SettingsError(f"keep_versions must be >= 1, got {self.keep_versions}")
        if self.max_message_bytes is not None and self.max_message_bytes <= 0:
            raise SettingsError(f"max_message_mb must be > 0, got {self.max_message_bytes // MIB}")
        if self.metrics_tls and not self.security.tls:
            raise SettingsError("metrics_tls needs tls_cert and tls_key (the gRPC certificate)")
        if self.metrics_auth and self.security.auth_tokens_file is None:
            raise SettingsError("metrics_auth needs auth_tokens_file (the gRPC port's tokens)")
        if not self.models.is_dir():
            raise SettingsError(f"models directory {str(self.models)!r} does not exist")
        try:
            self.engine.validate()
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        self.security.validate()


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "int | None": int,
    "float": float,
    "str": str,
    "str | None": str,
    "bool": _parse_bool,
    "Path": Path,
    "Path | None": Path,
}

# Settings whose option takes another unit than the field: field -> (option name, multiplier).
_SCALED = {
    "kv_budget_bytes": ("kv_budget_mb", MIB),
    "max_image_bytes": ("max_image_mb", MIB),
    "max_message_bytes": ("max_message_mb", MIB),
}


def _lookup(option: str, type_name: str, args: argparse.Namespace, environ: Mapping[str, str]):
    """The flag's value if given, else the environment variable's, else None (the default)."""
    parse = _PARSERS[type_name]
    value = getattr(args, option, None)
    if value is not None:
        return parse(value) if isinstance(value, str) else value
    env_name = ENV_PREFIX + option.upper()
    raw = environ.get(env_name, "")
    if raw == "":
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{env_name}={raw!r} is not a valid {type_name}") from exc


def _collect(
    cls: type, args: argparse.Namespace, environ: Mapping[str, str], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Keyword arguments for the dataclass `cls` from flags and environment; unset ones left out
    so the dataclass default applies."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        option, multiplier = _SCALED.get(f.name, (f.name, None))
        value = _lookup(option, str(f.type), args, environ)
        if value is not None:
            values[f.name] = value * multiplier if multiplier else value
    return values


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ServerSettings:
    """Build and validate the settings of `attnserve serve` (flags win over ATTNSERVE_* vars)."""
    server_values = _collect(ServerSettings, args, environ, skip=("engine", "security"))
    if "models" not in server_values:
        raise SettingsError("no models directory: pass --models DIR or set ATTNSERVE_MODELS")
    settings = ServerSettings(
        **server_values,
        engine=EngineConfig(**_collect(EngineConfig, args, environ)),
        security=SecuritySettings(**_collect(SecuritySettings, args, environ)),
    )
    settings.validate()
    return settings
