"""Random and malformed requests through a real channel to both APIs: every answer is OK or a
client-error status code (never INTERNAL or UNKNOWN), and the server stays healthy.

`make test` sends FUZZ_EXAMPLES requests to each API; `make test-slow` SLOW_FUZZ_EXAMPLES. The
codes seen are printed at the end of the module (run with -s to read them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb import grpc_service_pb2_grpc as kserve_grpc
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.fixtures.inprocess_server import serving
from tests.reliability.fuzz_requests import (
    IMAGE_SIDE_MAX,
    MAX_BATCH_ELEMENTS,
    MAX_INPUT_BYTES,
    AttentionCall,
    attention_calls,
    garbage_on_the_wire,
    infer_batches,
)

FUZZ_EXAMPLES = 150  # per API: 300 requests in the default run (+ wire garbage)
SLOW_FUZZ_EXAMPLES = 4000  # per API, + 2,000 on the wire: 10,000 in `make test-slow`
SLOW_WIRE_EXAMPLES = 2000
CALL_TIMEOUT_S = 20
# Sequential requests on an idle server: nothing may be refused for load or time.
ANSWERED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


class FuzzTarget:
    """Raw stubs of both APIs and health on one channel, and a tally of the codes answered."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.attention = pb_grpc.AttentionServiceStub(channel)
        self.kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.codes: Counter[tuple[str, str]] = Counter()
        self.channel: grpc.Channel | None = None

    def assert_healthy(self) -> None:
        check = self.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def target(models_dir: Path) -> Iterator[FuzzTarget]:
    with (
        serving(
            models_dir,
            max_new_tokens_cap=8,
            max_num_beams=4,
            max_image_pixels=(IMAGE_SIDE_MAX * IMAGE_SIDE_MAX) // 2,
            max_input_bytes=MAX_INPUT_BYTES,
            max_batch_elements=MAX_BATCH_ELEMENTS,
        ) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        fuzz = FuzzTarget(channel)
        fuzz.channel = channel
        yield fuzz
    print(f"\nfuzzed requests by API and status code: {dict(sorted(fuzz.codes.items()))}")


def final_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The status a call ends with (a streaming call is read to its end by `call`)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def send_attention_call(target: FuzzTarget, call: AttentionCall) -> None:
    method = getattr(target.attention, call.method)
    if call.method.endswith("Stream"):
        code = final_code(lambda: list(method(call.request, timeout=CALL_TIMEOUT_S)))
    else:
        code = final_code(lambda: method(call.request, timeout=CALL_TIMEOUT_S))
    target.codes["AttentionService", code.name] += 1
    assert code in ANSWERED, f"{call.method} answered {code.name}"
    target.assert_healthy()


def send_infer_requests(target: FuzzTarget, requests: list[kserve_pb.ModelInferRequest]) -> None:
    """One request as ModelInfer; several in one ModelStreamInfer (each answered in the stream)."""
    if len(requests) == 1:
        code = final_code(lambda: target.kserve.ModelInfer(requests[0], timeout=CALL_TIMEOUT_S))
        target.codes["ModelInfer", code.name] += 1
        answered = ANSWERED
        if "timeout" in requests[0].parameters:  # microseconds: a tiny one passes at once
            answered = ANSWERED | {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert code in answered, f"ModelInfer answered {code.name}"
    else:
        responses = list(target.kserve.ModelStreamInfer(iter(requests), timeout=CALL_TIMEOUT_S))
        for response in responses:
            target.codes[
                "ModelStreamInfer", "error_message" if response.error_message else "OK"
            ] += 1
        assert len(responses) == len(requests)
        assert not any("internal" in r.error_message for r in responses)
    target.assert_healthy()


def send_garbage(target: FuzzTarget, method: str, payload: bytes) -> None:
    """Raw bytes as a method's request message: decoded or refused, never UNKNOWN."""
    assert target.channel is not None
    if method.endswith("Stream") or method.endswith("StreamInfer"):
        if method.endswith("ModelStreamInfer"):
            call = target.channel.stream_stream(method)
            code = final_code(lambda: list(call(iter([payload]), timeout=CALL_TIMEOUT_S)))
        else:
            call = target.channel.unary_stream(method)
            code = final_code(lambda: list(call(payload, timeout=CALL_TIMEOUT_S)))
    else:
        call = target.channel.unary_unary(method)
        code = final_code(lambda: call(payload, timeout=CALL_TIMEOUT_S))
    target.codes["wire", code.name] += 1
    assert code in ANSWERED, f"{method} answered {code.name} to {payload!r}"
    target.assert_healthy()


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@fuzz_settings(FUZZ_EXAMPLES)
@given(call=attention_calls())
def test_random_attention_requests_get_client_error_codes(target: FuzzTarget, call):
    send_attention_call(target, call)


@fuzz_settings(FUZZ_EXAMPLES)
@given(requests=infer_batches)
def test_random_kserve_requests_get_client_error_codes(target: FuzzTarget, requests):
    send_infer_requests(target, requests)


@pytest.mark.slow
@fuzz_settings(SLOW_FUZZ_EXAMPLES)
@given(call=attention_calls())
def test_many_random_attention_requests_get_client_error_codes(target: FuzzTarget, call):
    send_attention_call(target, call)


@pytest.mark.slow
@fuzz_settings(SLOW_FUZZ_EXAMPLES)
@given(requests=infer_batches)
def test_many_random_kserve_requests_get_client_error_codes(target: FuzzTarget, requests):
    send_infer_requests(target, requests)


@fuzz_settings(FUZZ_EXAMPLES // 3)
@given(garbage=garbage_on_the_wire())
def test_garbage_on_the_wire_gets_client_error_codes(target: FuzzTarget, garbage):
    send_garbage(target, *garbage)


@pytest.mark.slow
@fuzz_settings(SLOW_WIRE_EXAMPLES)
@given(garbage=garbage_on_the_wire())
def test_much_garbage_on_the_wire_gets_client_error_codes(target: FuzzTarget, garbage):
    send_garbage(target, *garbage)
