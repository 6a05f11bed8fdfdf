"""The client side: a synchronous Python client (`AttnserveClient`), `attnserve client`, the
attribution views it prints or draws, and the container health check. Nothing here is imported
by the server."""

from service.client.grpc_client import AttnserveClient, run_client

__all__ = ["AttnserveClient", "run_client"]
