"""The server's grpc.aio interceptors (bearer tokens, request metrics, request logging) and the
one helper they share to rebuild a method handler around a wrapped behaviour (handlers.py)."""
