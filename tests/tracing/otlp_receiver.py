"""A minimal OTLP/gRPC trace receiver on 127.0.0.1, built from the official proto package's
service stubs: it keeps every span exported to it, for the tests to read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver(collector_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request: collector_pb.ExportTraceServiceRequest, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self._spans.extend(scope_spans.spans)
        return collector_pb.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, found: Callable[[list[Span]], bool], timeout_s: float = 20.0) -> list[Span]:
        """The spans received, once `found` says they are all there."""
        deadline = time.monotonic() + timeout_s
        while not found(spans := self.spans()):
            if time.monotonic() > deadline:
                raise AssertionError(f"spans not received in {timeout_s} s: {spans}")
            time.sleep(0.05)
        return spans


@contextmanager
def otlp_receiver() -> Iterator[tuple[Receiver, str]]:
    """A running receiver and the endpoint to export to (http://127.0.0.1:PORT)."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    collector_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
