"""Traces arrive at a real OTLP receiver: a server span per request, child of the caller's
`traceparent` (gRPC metadata, HTTP header), with queue_wait, encoder, decode and delivery
spans under it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.fixtures.served_models import tiny_models_once
from tests.integration.models import TEXT
from tests.tracing.otlp_receiver import Receiver, otlp_receiver

PHASES = ("queue_wait", "encoder", "decode", "delivery")
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessServer, Receiver]]:
    models = tiny_models_once(tmp_path_factory)
    with otlp_receiver() as (receiver, endpoint):
        overrides = {"http_port": 0, "otlp_endpoint": endpoint}
        with serving(models, server_overrides=overrides) as server:
            yield server, receiver


def _traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def _trace(receiver: Receiver, trace_id: str, server_span: str) -> tuple[Span, list[Span]]:
    """The server span named `server_span` in trace `trace_id`, and its children."""

    def complete(spans: list[Span]) -> bool:
        names = {s.name for s in spans if s.trace_id.hex() == trace_id}
        return {server_span, *PHASES} <= names

    spans = [s for s in receiver.wait_for(complete) if s.trace_id.hex() == trace_id]
    [root] = [s for s in spans if s.name == server_span]
    return root, [s for s in spans if s.parent_span_id == root.span_id]


def test_a_grpc_call_is_traced_under_the_callers_traceparent(traced):
    server, receiver = traced
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    stub = pb_grpc.AttentionServiceStub(grpc.insecure_channel(server.target))
    answer = stub.Summarize(
        pb.SummarizeRequest(text=TEXT, params=pb.GenerationParams(max_new_tokens=4)),
        metadata=[("traceparent", _traceparent(trace_id, caller_span))],
        timeout=TIMEOUT_S,
    )
    root, children = _trace(receiver, trace_id, "attnserve.v1.AttentionService/Summarize")
    assert root.parent_span_id.hex() == caller_span
    assert root.kind == Span.SpanKind.SPAN_KIND_SERVER
    by_name = {child.name: child for child in children}
    assert sorted(by_name) == sorted(PHASES)
    for earlier, later in zip(PHASES, PHASES[1:], strict=False):
        assert by_name[earlier].start_time_unix_nano <= by_name[later].start_time_unix_nano
    assert root.start_time_unix_nano <= by_name["queue_wait"].start_time_unix_nano
    assert by_name["delivery"].end_time_unix_nano <= root.end_time_unix_nano
    decode = {a.key: a.value for a in by_name["decode"].attributes}
    assert decode["attnserve.output_tokens"].int_value == answer.output_tokens
    assert decode["attnserve.input_tokens"].int_value == answer.input_tokens


def test_an_http_stream_is_traced_under_the_callers_traceparent(traced):
    server, receiver = traced
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.server.rest.port}/v1/summarize/stream",
        data=json.dumps({"text": TEXT, "params": {"max_new_tokens": 4}}).encode(),
        headers={"traceparent": _traceparent(trace_id, caller_span)},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        assert response.status == 200
        response.read()
    root, children = _trace(receiver, trace_id, "POST /v1/summarize/stream")
    assert root.parent_span_id.hex() == caller_span
    assert sorted(child.name for child in children) == sorted(PHASES)
    status = {a.key: a.value for a in root.attributes}["http.response.status_code"]
    assert status.int_value == 200


def test_a_call_without_traceparent_starts_its_own_trace(traced):
    server, receiver = traced
    stub = pb_grpc.AttentionServiceStub(grpc.insecure_channel(server.target))
    stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT_S)
    name = "attnserve.v1.AttentionService/ListModels"
    spans = receiver.wait_for(lambda received: any(s.name == name for s in received))
    [root] = [span for span in spans if span.name == name]
    assert root.parent_span_id == b""
