"""Container health probe: asks the local server's grpc.health.v1 service whether it is SERVING.

Docker's HEALTHCHECK runs a command and reads its exit code, and the runtime image has no
grpc_health_probe binary, so this small script fills that role (Kubernetes uses its native gRPC
probe instead, except with TLS: the kubelet's gRPC probe speaks plaintext only, so a TLS port is
probed by running this script as an exec probe). Exit 0 when SERVING; 1 otherwise (loading,
draining, not listening, timed out, TLS handshake refused).

    python -m service.client.healthcheck [--target HOST:PORT] [--service NAME] [--timeout SECONDS]
        [--ca-cert PEM [--server-name NAME]] [--client-cert PEM --client-key PEM]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_target() -> str:
    """127.0.0.1 on the port the server was told to use (ATTNSERVE_PORT), as in the container."""
    return f"127.0.0.1:{os.environ.get('ATTNSERVE_PORT') or DEFAULT_PORT}"


def _channel(target: str, args: argparse.Namespace | None) -> grpc.Channel:
    """Plaintext, or TLS when a CA or a client certificate is given (as `attnserve client`).
    `--server-name` is the name the server's certificate must carry when it differs from the
    dialled address (a probe dials 127.0.0.1; the certificate names the Service)."""
    if args is None or (args.ca_cert is None and args.client_cert is None):
        return grpc.insecure_channel(target)
    if (args.client_cert is None) != (args.client_key is None):
        raise ValueError("--client-cert and --client-key go together")

    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    credentials = grpc.ssl_channel_credentials(
        read(args.ca_cert), read(args.client_key), read(args.client_cert)
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def is_serving(
    target: str, service: str = "", timeout_s: float = 3.0, tls: argparse.Namespace | None = None
) -> tuple[bool, str]:
    """(True, "SERVING") if `target` reports `service` SERVING; else (False, why). `tls`: the
    parsed --ca-cert/--client-cert/--client-key/--server-name flags (None: plaintext)."""
    with _channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.client.healthcheck", description=__doc__
    )
    parser.add_argument("--target", default=None, help="host:port (default 127.0.0.1:$PORT)")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply")
    parser.add_argument("--ca-cert", default=None, help="PEM CA to verify the server by: use TLS")
    parser.add_argument("--server-name", default=None, help="name the server certificate carries")
    parser.add_argument("--client-cert", default=None, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--client-key", default=None, help="PEM private key of --client-cert")
    args = parser.parse_args(argv)
    target = args.target or default_target()
    try:
        serving, status = is_serving(target, args.service, args.timeout, tls=args)
    except (OSError, ValueError) as exc:
        print(f"{target}: cannot use the TLS files: {exc}", file=sys.stderr)
        return 1
    print(f"{target}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
