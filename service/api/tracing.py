"""OpenTelemetry traces (`--otlp-endpoint`): a span per request, with its phases as children.

Each gRPC call and HTTP request gets a server span (its parent taken from the caller's W3C
`traceparent`, in gRPC metadata or an HTTP header). Under it, each engine request it made gets
four child spans, built after the fact from the timestamps the engine's step thread records
(service.engine.types.RequestTiming), so the step loop never calls a tracer:

- `queue_wait`: queued until it joined the decode batch;
- `encoder`: its batch's encoder run, in the step that admitted it;
- `decode`: from there to its last step (attributes: input and output tokens, finish reason);
- `delivery`: from the step thread's hand-over to the response being ready on the event loop.

`TracedEngine` is what the servicers are attached to when tracing is on: the engine, with
`result` and `generate` recording those spans under the current server span. Spans leave in
batches on the exporter's own thread (BatchSpanProcessor), to an OTLP/gRPC collector.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.engine.types import GenerationRequest, GenerationResult, TokenDelta

if TYPE_CHECKING:
    from service.engine.engine import Engine

SERVICE_NAME = "attnserve"
EXPORT_DELAY_MS = 1000  # how long finished spans may wait for their batch to leave


class Tracing:
    """The tracer of one server and its exporter to the collector at `endpoint`."""

    def __init__(self, endpoint: str) -> None:
        self._provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS)
        self._provider.add_span_processor(processor)
        self.tracer = self._provider.get_tracer(__name__)

    @contextmanager
    def server_span(self, name: str, carrier: Mapping[str, str], **attributes: Any):
        """The current span for one incoming call, child of the caller's `traceparent` (if
        `carrier`, its headers or metadata, has one); marked failed if the call raises."""
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        span.set_attributes(attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def shutdown(self) -> None:
        """Send the spans still waiting, then stop the exporter."""
        self._provider.shutdown()


def _ns(monotonic_s: float, offset_ns: int) -> int:
    return int(monotonic_s * 1e9) + offset_ns


def record_phases(tracer: trace.Tracer, result: GenerationResult, delivered_at: float) -> None:
    """The four phase spans of one finished engine request, under the current span."""
    timing = result.timing
    if timing is None or not trace.get_current_span().is_recording():
        return
    offset_ns = time.time_ns() - time.monotonic_ns()  # monotonic -> wall clock, as OTLP wants
    encoded_at = timing.admitted_at + timing.encoder_seconds
    phases: Iterable[tuple[str, float, float, dict[str, Any]]] = (
        ("queue_wait", timing.arrived_at, timing.admitted_at, {}),
        ("encoder", timing.admitted_at, encoded_at, {}),
        (
            "decode",
            encoded_at,
            timing.finished_at,
            {
                "attnserve.input_tokens": result.input_tokens,
                "attnserve.output_tokens": result.output_tokens,
                "attnserve.finish_reason": result.finish_reason,
            },
        ),
        ("delivery", timing.finished_at, delivered_at, {}),
    )
    for name, start, end, attributes in phases:
        span: Span = tracer.start_span(
            name, start_time=_ns(start, offset_ns), attributes=attributes
        )
        span.end(end_time=_ns(max(start, end), offset_ns))


class TracedEngine:
    """The engine as the servicers use it, recording each request's phase spans."""

    def __init__(self, engine: Engine, tracing: Tracing) -> None:
        self._engine = engine
        self._tracer = tracing.tracer

    def __getattr__(self, name: str) -> Any:  # models(), resolve(), draining, ...: the engine's
        return getattr(self._engine, name)

    async def result(self, request: GenerationRequest) -> GenerationResult:
        result = await self._engine.result(request)
        record_phases(self._tracer, result, time.monotonic())
        return result

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        async with aclosing(self._engine.generate(request)) as outputs:
            async for output in outputs:
                if isinstance(output, GenerationResult):
                    record_phases(self._tracer, output, time.monotonic())
                yield output
