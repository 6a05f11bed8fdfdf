"""Triton's own clients, unmodified: the protocol parameters they send are accepted, and a
`stream: true` request on ModelStreamInfer is answered decoupled-style, token chunk by chunk.

perf_analyzer's requests are also rebuilt here field by field, as Triton's C++ client
(`InferenceServerGrpcClient::PreRunProcessing`, which perf_analyzer calls) writes them, and sent
at several concurrencies, unary and on a stream (`--streaming`): the binary itself runs in
test_perf_analyzer.py where it could be installed; these run everywhere.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import tritonclient.grpc as triton

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb import grpc_service_pb2_grpc as kserve_grpc
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from service.api.kserve_tensors import decode_raw_bytes, encode_raw_bytes
from tests.kserve.conftest import RunningServer
from tests.kserve.test_kserve import TEXTS, TIMEOUT_S, _bytes_input, _status_of, _texts

FINAL = "triton_final_response"


@pytest.fixture(scope="module")
def client(kserve_server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(kserve_server.target)


@pytest.fixture(scope="module")
def stub(kserve_server: RunningServer) -> kserve_grpc.GRPCInferenceServiceStub:
    return kserve_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(kserve_server.target))


@pytest.fixture(scope="module")
def expected(kserve_server: RunningServer) -> dict[str, str]:
    """Our own API's summary of each text: what every other path must answer."""
    own_api = pb_grpc.AttentionServiceStub(grpc.insecure_channel(kserve_server.target))
    return {
        text: own_api.Summarize(pb.SummarizeRequest(model=kserve_server.summarizer, text=text)).text
        for text in TEXTS[:4]
    }


def perf_analyzer_request(model: str, text: str, request_id: str) -> kserve_pb.ModelInferRequest:
    """A request as perf_analyzer sends it: raw input contents, the empty-final-response flag it
    always sets, sequence fields, priority and the server-side timeout."""
    request = kserve_pb.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.parameters["sequence_id"].int64_param = 7
    request.parameters["sequence_start"].bool_param = True
    request.parameters["sequence_end"].bool_param = True
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = TIMEOUT_S * 1_000_000
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(encode_raw_bytes([text.encode()]))
    return request


def _answer(response: kserve_pb.ModelInferResponse) -> str:
    return decode_raw_bytes(response.raw_output_contents[0], "text")[0].decode()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_perf_analyzer_unary_requests_are_answered(stub, kserve_server, expected, concurrency):
    texts = list(expected) * (2 if concurrency > 1 else 1)

    def infer(index: int) -> str:
        request = perf_analyzer_request(kserve_server.summarizer, texts[index], str(index))
        return _answer(stub.ModelInfer(request, timeout=TIMEOUT_S))

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(infer, range(len(texts))))
    assert answers == [expected[text] for text in texts]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_perf_analyzer_streaming_requests_get_one_final_response_each(
    stub, kserve_server, expected, concurrency
):
    texts = list(expected)[:concurrency]
    requests = [
        perf_analyzer_request(kserve_server.summarizer, t, str(i)) for i, t in enumerate(texts)
    ]
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=TIMEOUT_S))
    assert [r.error_message for r in responses] == [""] * len(texts)
    by_id = {r.infer_response.id: r.infer_response for r in responses}
    assert {i: _answer(r) for i, r in by_id.items()} == {
        str(i): expected[t] for i, t in enumerate(texts)
    }
    assert all(r.parameters[FINAL].bool_param for r in by_id.values())


def test_tritonclient_reserved_parameters_are_accepted(client, kserve_server, expected):
    text = TEXTS[0]
    result = client.infer(
        kserve_server.summarizer,
        [_bytes_input("text", [text], [1])],
        sequence_id=3,
        sequence_start=True,
        sequence_end=True,
        priority=2,
        timeout=TIMEOUT_S * 1_000_000,
        client_timeout=TIMEOUT_S,
    )
    assert _texts(result) == [expected[text]]


def test_any_triton_prefixed_parameter_is_ignored(stub, kserve_server, expected):
    request = perf_analyzer_request(kserve_server.summarizer, TEXTS[0], "x")
    request.parameters["triton_some_future_flag"].string_param = "on"
    assert _answer(stub.ModelInfer(request, timeout=TIMEOUT_S)) == expected[TEXTS[0]]


def _stream(client, kserve_server, texts: list[str], empty_final: bool) -> dict[str, list]:
    """Each text sent with `stream: true` on one stream; every response, by request id."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index, text in enumerate(texts):
            client.async_stream_infer(
                kserve_server.summarizer,
                [_bytes_input("text", [text], [1])],
                request_id=str(index),
                parameters={"stream": True},
                enable_empty_final_response=empty_final,
            )
        by_id: dict[str, list] = {str(index): [] for index in range(len(texts))}
        finished = 0
        while finished < len(texts):
            result, error = answers.get(timeout=TIMEOUT_S)
            assert error is None, error
            response = result.get_response()
            by_id[response.id].append(result)
            finished += response.parameters[FINAL].bool_param
    finally:
        client.stop_stream()
    return by_id


def test_stream_parameter_answers_token_chunks_then_an_empty_final_response(
    client, kserve_server, expected
):
    texts = TEXTS[:2]
    by_id = _stream(client, kserve_server, texts, empty_final=True)
    for index, text in enumerate(texts):
        *chunks, final = by_id[str(index)]
        assert len(chunks) > 1  # the demo answers are several words long
        assert "".join(_texts(chunk)[0] for chunk in chunks) == expected[text]
        assert not any(chunk.get_response().parameters[FINAL].bool_param for chunk in chunks)
        assert final.as_numpy("text") is None  # empty: no output tensor
        final_parameters = final.get_response().parameters
        assert final_parameters["finish_reason"].string_param == "eos"
        assert final_parameters["output_tokens"].int64_param > 0


def test_stream_without_empty_final_response_ends_with_an_empty_text(
    client, kserve_server, expected
):
    [*chunks, final] = _stream(client, kserve_server, TEXTS[:1], empty_final=False)["0"]
    assert "".join(_texts(chunk)[0] for chunk in chunks) == expected[TEXTS[0]]
    assert _texts(final) == [""]


def test_stream_parameter_on_model_infer_is_invalid_argument(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(
            kserve_server.summarizer,
            [_bytes_input("text", TEXTS[:1], [1])],
            parameters={"stream": True},
        )
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "ModelStreamInfer" in message


def test_stream_parameter_needs_one_element(stub, kserve_server):
    request = kserve_pb.ModelInferRequest(model_name=kserve_server.summarizer, id="two")
    request.parameters["stream"].bool_param = True
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(encode_raw_bytes([t.encode() for t in TEXTS[:2]]))
    [response] = stub.ModelStreamInfer(iter([request]), timeout=TIMEOUT_S)
    assert "needs an input of one element" in response.error_message
    assert response.infer_response.id == "two"


def test_stream_parameter_must_be_a_bool(stub, kserve_server):
    request = perf_analyzer_request(kserve_server.summarizer, TEXTS[0], "typed")
    request.parameters["stream"].string_param = "yes"
    [response] = stub.ModelStreamInfer(iter([request]), timeout=TIMEOUT_S)
    assert "parameter 'stream' must be sent as bool_param" in response.error_message


def test_stream_chunks_keep_the_input_shape(client, kserve_server, expected):
    """The chunks of a [1, 1] input come back as [1, 1] too, as the unary answer does."""
    tensor = _bytes_input("text", [TEXTS[0]], [1, 1])
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer(kserve_server.summarizer, [tensor], parameters={"stream": True})
        result, error = answers.get(timeout=TIMEOUT_S)
    finally:
        client.stop_stream()
    assert error is None and result.as_numpy("text").shape == (1, 1)
    assert expected[TEXTS[0]].startswith(result.as_numpy("text")[0, 0].decode())
