"""Container health probe: asks the local server's grpc.health.v1 service whether it is SERVING.

Docker's HEALTHCHECK runs a command and reads its exit code, and the runtime image has no
grpc_health_probe binary, so this small script fills that role (Kubernetes uses its native gRPC
probe instead). Exit 0 when SERVING; 1 otherwise (loading, draining, not listening, timed out).

    python -m service.client.healthcheck [--target HOST:PORT] [--service NAME] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_target() -> str:
    """127.0.0.1 on the port the server was told to use (ATTNSERVE_PORT), as in the container."""
    return f"127.0.0.1:{os.environ.get('ATTNSERVE_PORT') or DEFAULT_PORT}"


def is_serving(target: str, service: str = "", timeout_s: float = 3.0) -> tuple[bool, str]:
    """(True, "SERVING") if `target` reports `service` SERVING; else (False, why)."""
    with grpc.insecure_channel(target) as channel:
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
    args = parser.parse_args(argv)
    target = args.target or default_target()
    serving, status = is_serving(target, args.service, args.timeout)
    print(f"{target}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
