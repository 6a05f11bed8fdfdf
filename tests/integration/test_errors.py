"""Every status code a client can meet, each with a message that says what to fix."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb import grpc_service_pb2_grpc as kserve_pb_grpc
from service.api.status import MAX_MESSAGE_CHARS
from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import (
    CAPTIONER,
    LONG_REQUEST,
    LONG_REQUEST_ROWS,
    LONG_TOKENS,
    MAX_NUM_BEAMS,
    SHORT_REQUEST,
    SUMMARIZER,
    TEXT,
    wait_until,
)

FREED_WITHIN_S = 2.0  # a long request runs for many seconds; a stopped one frees its rows at once


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def assert_status(error: grpc.RpcError, code: grpc.StatusCode, *phrases: str) -> None:
    assert error.code() == code, error.details()
    for phrase in phrases:
        assert phrase in error.details()


def test_empty_text_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize("  ", **SHORT_REQUEST))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "text is empty")


def test_text_over_the_input_limit_is_invalid_and_the_message_gives_the_limit(
    client: AttnserveClient,
):
    (summarizer,) = client.list_models(task="summarization")
    too_long = " ".join(["w1"] * summarizer.max_input_tokens)  # + <s> and </s>

    error = rpc_error(lambda: client.summarize(too_long, **SHORT_REQUEST))

    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, str(summarizer.max_input_tokens))


def test_an_undecodable_image_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.caption(b"\x89PNG but not really"))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded")


def test_an_empty_image_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.caption(b""))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "image is empty")


def test_num_beams_above_the_server_cap_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize(TEXT, num_beams=MAX_NUM_BEAMS + 1))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "num_beams", str(MAX_NUM_BEAMS))


@pytest.mark.parametrize("top_p", [0.0, 1.5])
def test_top_p_outside_zero_to_one_is_invalid(client: AttnserveClient, top_p: float):
    error = rpc_error(lambda: client.summarize(TEXT, do_sample=True, top_p=top_p))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "top_p")


def test_max_new_tokens_above_the_server_cap_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize(TEXT, max_new_tokens=LONG_TOKENS + 1))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens", str(LONG_TOKENS))


def test_list_models_of_an_unknown_task_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.list_models(task="translation"))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "translation")


def test_an_unknown_model_is_not_found(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize(TEXT, model="no-such-model"))
    assert_status(error, grpc.StatusCode.NOT_FOUND, "no-such-model")


def test_a_huge_unknown_model_name_is_still_not_found(client: AttnserveClient):
    """The message quotes the name, cut: in full it would pass the 16 KiB header limit that
    clients enforce, and the client would see RESOURCE_EXHAUSTED instead."""
    name = "x" * 50_000
    error = rpc_error(lambda: client.summarize(TEXT, model=name))
    assert_status(error, grpc.StatusCode.NOT_FOUND, "characters cut")
    assert len(error.details()) <= MAX_MESSAGE_CHARS + 100


def test_a_model_of_the_other_task_is_not_found(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize(TEXT, model=CAPTIONER))
    assert_status(error, grpc.StatusCode.NOT_FOUND, CAPTIONER)


def test_a_running_request_past_its_deadline_stops_and_frees_its_rows(
    server: InProcessServer, client: AttnserveClient
):
    error = rpc_error(lambda: client.summarize(TEXT, timeout=0.5, **LONG_REQUEST))

    assert_status(error, grpc.StatusCode.DEADLINE_EXCEEDED)
    wait_until(lambda: server.engine.running_rows() == 0, FREED_WITHIN_S, "rows to be freed")


def test_a_cancelled_stream_frees_its_rows(server: InProcessServer, client: AttnserveClient):
    stream = client.summarize_stream(TEXT, **LONG_REQUEST)
    wait_until(lambda: server.engine.running_rows() == LONG_REQUEST_ROWS, what="the request to run")

    stream.cancel()

    assert stream.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: server.engine.running_rows() == 0, FREED_WITHIN_S, "rows to be freed")


@pytest.fixture(scope="module")
def one_batch_server(models_dir: Path) -> Iterator[InProcessServer]:
    """Room for exactly one long request running and one waiting."""
    with serving(
        models_dir,
        max_batch_rows=LONG_REQUEST_ROWS,
        max_num_beams=LONG_REQUEST_ROWS,
        max_queue=1,
        max_new_tokens_cap=LONG_TOKENS,
        max_image_pixels=100,
    ) as running:
        yield running


def test_a_full_queue_is_refused_at_once(one_batch_server: InProcessServer):
    engine = one_batch_server.engine
    with AttnserveClient(one_batch_server.target) as client:
        running = client.summarize_stream(TEXT, **LONG_REQUEST)
        wait_until(lambda: engine.running_rows() == LONG_REQUEST_ROWS, what="the first to run")
        waiting = client.summarize_stream(TEXT, **LONG_REQUEST)
        wait_until(lambda: engine.queue_length() == 1, what="the second to wait")

        started = time.monotonic()
        error = rpc_error(lambda: client.summarize(TEXT, **SHORT_REQUEST))
        answered_after = time.monotonic() - started
        refused_while_busy = not running.done()
        for call in (waiting, running):
            call.cancel()

    assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full")
    assert answered_after < 1.0
    assert refused_while_busy
    wait_until(lambda: engine.running_rows() == 0, FREED_WITHIN_S, "rows to be freed")


def _texts_request(count: int) -> kserve_pb.ModelInferRequest:
    request = kserve_pb.ModelInferRequest(model_name=SUMMARIZER)
    request.parameters["max_new_tokens"].int64_param = 4
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[count])
    tensor.contents.bytes_contents.extend([TEXT.encode()] * count)
    return request


def _rejected(server: InProcessServer, reason: str) -> float:
    sample = server.metrics.registry.get_sample_value(
        "attnserve_rejected_requests_total", {"model": SUMMARIZER, "reason": reason}
    )
    return sample or 0.0


def test_a_call_of_more_elements_than_the_queue_holds_is_invalid(
    one_batch_server: InProcessServer,
):
    """It could never be admitted (its elements fail together): retrying cannot help."""
    before = _rejected(one_batch_server, "invalid_argument")
    with grpc.insecure_channel(one_batch_server.target) as channel:
        infer = kserve_pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        error = rpc_error(lambda: infer(_texts_request(2), timeout=30))
        assert infer(_texts_request(1), timeout=30).outputs  # one element fits
    assert_status(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "this call has 2 elements, more than the request queue holds (1, --max-queue)",
    )
    assert _rejected(one_batch_server, "invalid_argument") == before + 2


def test_a_call_whose_elements_do_not_all_fit_in_the_queue_is_refused_whole(
    models_dir: Path,
):
    """None of its elements is queued (before, those that fitted were prepared, queued, then
    cancelled when a sibling was refused)."""
    with serving(
        models_dir,
        max_batch_rows=LONG_REQUEST_ROWS,
        max_num_beams=LONG_REQUEST_ROWS,
        max_queue=3,
        max_new_tokens_cap=LONG_TOKENS,
    ) as server:
        engine = server.engine
        with (
            AttnserveClient(server.target) as client,
            grpc.insecure_channel(server.target) as channel,
        ):
            running = client.summarize_stream(TEXT, **LONG_REQUEST)
            wait_until(lambda: engine.running_rows() == LONG_REQUEST_ROWS, what="one to run")
            waiting = client.summarize_stream(TEXT, **LONG_REQUEST)
            wait_until(lambda: engine.queue_length() == 1, what="one to wait")
            infer = kserve_pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            error = rpc_error(lambda: infer(_texts_request(3), timeout=30))
            queued_after = engine.queue_length()
            rejected = _rejected(server, "resource_exhausted")
            for call in (waiting, running):
                call.cancel()
    assert_status(
        error,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the request queue has room for 2 of this call's 3 elements (3 may wait)",
    )
    assert queued_after == 1 and rejected == 3


def test_a_request_whose_deadline_passes_while_waiting_is_never_run(
    one_batch_server: InProcessServer,
):
    engine = one_batch_server.engine
    with AttnserveClient(one_batch_server.target) as client:
        running = client.summarize_stream(TEXT, **LONG_REQUEST)
        wait_until(lambda: engine.running_rows() == LONG_REQUEST_ROWS, what="the first to run")

        error = rpc_error(lambda: client.summarize(TEXT, timeout=0.5, **LONG_REQUEST))
        wait_until(lambda: engine.queue_length() == 0, FREED_WITHIN_S, "the queue to empty")
        rows_while_first_runs = engine.running_rows()
        running.cancel()

    assert_status(error, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert rows_while_first_runs == LONG_REQUEST_ROWS  # the expired one never joined the batch


def test_an_image_over_the_pixel_cap_is_invalid(
    one_batch_server: InProcessServer, png_image: bytes
):
    with AttnserveClient(one_batch_server.target) as client:
        error = rpc_error(lambda: client.caption(png_image))

    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "100")


BAD_UTF8_TEXT = b"\x12\x01\xff"  # SummarizeRequest.text (field 2) holding the byte 0xff
GARBAGE = b"\xff\xff\xff\xff"


@pytest.mark.parametrize("payload", [BAD_UTF8_TEXT, GARBAGE], ids=["bad-utf8", "garbage"])
@pytest.mark.parametrize(
    "method",
    [
        "/attnserve.v1.AttentionService/Summarize",
        "/inference.GRPCInferenceService/ModelInfer",
    ],
)
def test_an_undecodable_message_is_invalid(server: InProcessServer, method: str, payload: bytes):
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(method)
        error = rpc_error(lambda: call(payload, timeout=10))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded")


def test_an_undecodable_message_in_a_stream_is_invalid(server: InProcessServer):
    with grpc.insecure_channel(server.target) as channel:
        summarize = channel.unary_stream("/attnserve.v1.AttentionService/SummarizeStream")
        error = rpc_error(lambda: list(summarize(BAD_UTF8_TEXT, timeout=10)))
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded")
        infer = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        error = rpc_error(lambda: list(infer(iter([GARBAGE]), timeout=10)))
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "could not be decoded")


def test_a_message_of_millions_of_tiny_fields_is_refused_before_parsing(
    server: InProcessServer, client: AttnserveClient
):
    """Two million empty elements (4 MB on the wire, hundreds of MB once parsed) are refused
    by counting them, unary and streamed; the server answers the next request."""
    request = kserve_pb.ModelInferRequest(model_name=CAPTIONER)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.extend([b""] * 2_000_000)
    payload = request.SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        error = rpc_error(lambda: infer(payload, timeout=30))
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "more than 10000 fields")
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        error = rpc_error(lambda: list(stream(iter([payload]), timeout=30)))
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "more than 10000 fields")
    assert client.summarize(TEXT, **SHORT_REQUEST).text


def test_a_text_without_printable_characters_is_invalid(client: AttnserveClient):
    error = rpc_error(lambda: client.summarize("\x00" * 100, timeout=10))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "no printable character")


def test_deadlines_racing_the_engines_own_stop_log_no_errors(
    client: AttnserveClient, caplog: pytest.LogCaptureFixture
):
    """The client's deadline and the engine's DeadlineExceeded end the same request at about the
    same time: the client gets DEADLINE_EXCEEDED and the server logs nothing at ERROR."""
    with caplog.at_level(logging.ERROR):
        for index in range(30):
            timeout = 0.05 + 0.01 * index
            error = rpc_error(lambda t=timeout: client.summarize(TEXT, timeout=t, **LONG_REQUEST))
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
