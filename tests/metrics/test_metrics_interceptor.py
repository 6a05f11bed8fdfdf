"""MetricsInterceptor on a real grpc.aio server: each RPC is counted once, under the status code
the client received, and timed.

The probe service is raw bytes in and out, so that each test can end an RPC exactly the way it
is about (return, abort, crash, deadline, client cancel) without an engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import generate_latest

from service.api.interceptors.metrics import MetricsInterceptor, label_rpc_model
from service.metrics import ServerMetrics
from tests.metrics.exposition import total, value

SERVICE = "attnserve.test.Probe"
REQUESTS = "attnserve_requests_total"


class ProbeService:
    """How each probe RPC ends; `stream_closed` is set when a stream's generator is closed."""

    def __init__(self) -> None:
        self.stream_closed = asyncio.Event()

    async def labelled(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        label_rpc_model("summarizer", "3")
        return b"ok"

    async def unlabelled(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"ok"

    async def aborts(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        label_rpc_model("summarizer", "3")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is empty")

    async def sets_code(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        return b""

    async def crashes(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("a bug")

    async def sleeps(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(30)
        return b"late"

    async def streams(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        label_rpc_model("captioner", "1")
        try:
            for part in (b"a", b"b", b"c"):
                yield part
            if request == b"then abort":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
            if request == b"then wait":
                await asyncio.sleep(30)
        finally:
            self.stream_closed.set()

    async def echoes(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        label_rpc_model("summarizer", "3")
        async for request in requests:
            yield request

    def handler(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        methods = {
            "Labelled": unary(self.labelled),
            "Unlabelled": unary(self.unlabelled),
            "Unserved": unary(self.unlabelled),  # has a handler, but not in the served set
            "Aborts": unary(self.aborts),
            "SetsCode": unary(self.sets_code),
            "Crashes": unary(self.crashes),
            "Sleeps": unary(self.sleeps),
            "Streams": grpc.unary_stream_rpc_method_handler(self.streams),
            "Echoes": grpc.stream_stream_rpc_method_handler(self.echoes),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)


PROBE_METHODS = (
    "Labelled",
    "Unlabelled",
    "Unserved",
    "Aborts",
    "SetsCode",
    "Crashes",
    "Sleeps",
    "Streams",
    "Echoes",
)

Scenario = Callable[[grpc.aio.Channel, ProbeService], Awaitable[None]]


def exposition_after(scenario: Scenario) -> str:
    """Run `scenario` against a probe server with the interceptor; the exposition afterwards."""
    metrics = ServerMetrics()

    async def run() -> None:
        probe = ProbeService()
        served = frozenset(PROBE_METHODS) - {"Unserved"}
        server = grpc.aio.server(interceptors=[MetricsInterceptor(metrics, served)])
        server.add_generic_rpc_handlers((probe.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await scenario(channel, probe)
        finally:
            await server.stop(None)

    asyncio.run(asyncio.wait_for(run(), 60))
    return generate_latest(metrics.registry).decode()


async def call(channel: grpc.aio.Channel, method: str, timeout: float | None = None) -> bytes:
    return await channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=timeout)


@asynccontextmanager
async def expect_code(code: grpc.StatusCode) -> AsyncIterator[None]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        yield
    assert failure.value.code() == code


def test_successful_rpcs_are_counted_ok_under_their_model():
    async def scenario(channel, _probe):
        for _ in range(3):
            await call(channel, "Labelled")

    text = exposition_after(scenario)
    labels = {"model": "summarizer", "version": "3", "method": "Labelled"}
    assert value(text, REQUESTS, code="OK", **labels) == 3
    assert value(text, "attnserve_request_duration_seconds_count", **labels) == 3


def test_rpcs_the_servicer_does_not_label_have_empty_model_labels():
    async def scenario(channel, _probe):
        await call(channel, "Unlabelled")

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Unlabelled", code="OK", model="", version="") == 1


def test_an_abort_is_counted_under_its_status_code():
    async def scenario(channel, _probe):
        async with expect_code(grpc.StatusCode.INVALID_ARGUMENT):
            await call(channel, "Aborts")

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Aborts", code="INVALID_ARGUMENT", model="summarizer") == 1
    assert total(text, REQUESTS) == 1


def test_a_code_set_without_abort_is_counted():
    async def scenario(channel, _probe):
        async with expect_code(grpc.StatusCode.NOT_FOUND):
            await call(channel, "SetsCode")

    assert value(exposition_after(scenario), REQUESTS, method="SetsCode", code="NOT_FOUND") == 1


def test_an_unhandled_exception_is_counted_as_unknown_like_the_client_sees_it():
    async def scenario(channel, _probe):
        async with expect_code(grpc.StatusCode.UNKNOWN):
            await call(channel, "Crashes")

    assert value(exposition_after(scenario), REQUESTS, method="Crashes", code="UNKNOWN") == 1


def test_an_expired_deadline_is_counted_as_deadline_exceeded():
    async def scenario(channel, _probe):
        async with expect_code(grpc.StatusCode.DEADLINE_EXCEEDED):
            await call(channel, "Sleeps", timeout=0.2)
        await asyncio.sleep(0.3)  # the server side notices the deadline on its own clock

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Sleeps", code="DEADLINE_EXCEEDED") == 1
    assert value(text, "attnserve_request_duration_seconds_sum", method="Sleeps") >= 0.15


def test_a_finished_stream_is_counted_once_ok():
    async def scenario(channel, _probe):
        parts = [part async for part in channel.unary_stream(f"/{SERVICE}/Streams")(b"")]
        assert parts == [b"a", b"b", b"c"]

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Streams", code="OK", model="captioner") == 1
    assert total(text, REQUESTS) == 1


def test_a_stream_aborted_after_some_messages_is_counted_under_its_code():
    async def scenario(channel, _probe):
        async with expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
            async for _part in channel.unary_stream(f"/{SERVICE}/Streams")(b"then abort"):
                pass

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Streams", code="RESOURCE_EXHAUSTED") == 1


def test_a_stream_the_client_cancels_is_counted_cancelled_and_closed_at_once():
    async def scenario(channel, probe):
        stream = channel.unary_stream(f"/{SERVICE}/Streams")(b"then wait")
        async for part in stream:
            if part == b"c":  # the last part; the servicer now waits
                break
        stream.cancel()
        await asyncio.wait_for(probe.stream_closed.wait(), 5)
        await asyncio.sleep(0.1)  # the interceptor records after the servicer's finally

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Streams", code="CANCELLED") == 1


def test_a_bidirectional_stream_is_counted_once_ok():
    async def scenario(channel, _probe):
        echoes = channel.stream_stream(f"/{SERVICE}/Echoes")(iter([b"x", b"y"]))
        assert [part async for part in echoes] == [b"x", b"y"]

    text = exposition_after(scenario)
    assert value(text, REQUESTS, method="Echoes", code="OK", model="summarizer") == 1
    assert total(text, REQUESTS) == 1


def test_health_checks_are_not_counted():
    async def scenario(channel, _probe):
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest())

    assert total(exposition_after(scenario), REQUESTS) == 0


def test_methods_outside_the_served_set_share_one_label():
    async def scenario(channel, _probe):
        for _ in range(3):
            await call(channel, "Unserved")

    text = exposition_after(scenario)
    assert 'method="other"' in text and 'method="Unserved"' not in text
