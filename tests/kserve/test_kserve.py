"""The KServe v2 service, spoken to by the unmodified tritonclient, on the demo models.

Answers are checked against our own API on the same server: the protocol is a transport, so a
text summarized or an image captioned through KServe must read exactly as through AttentionService.
"""

from __future__ import annotations

import io
import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from export.demo.tasks import make_match_report, render_shapes
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.kserve.conftest import RunningServer

REPORTS = [make_match_report(np.random.default_rng(seed)) for seed in range(100, 106)]
TEXTS = [report for report, _ in REPORTS]
SHAPES = [render_shapes(np.random.default_rng(seed)) for seed in range(200, 206)]
# The demo task spec promises >= 95% exact answers over 500 cases; a handful may miss.
DEMO_ACCURACY_FLOOR = 0.8
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def client(kserve_server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(kserve_server.target)


@pytest.fixture(scope="module")
def own_api(kserve_server: RunningServer) -> pb_grpc.AttentionServiceStub:
    return pb_grpc.AttentionServiceStub(grpc.insecure_channel(kserve_server.target))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bytes_input(name: str, elements: list[bytes | str], shape: list[int]) -> triton.InferInput:
    tensor = triton.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_).reshape(shape))
    return tensor


def _texts(result: triton.InferResult) -> list[str]:
    return [element.decode() for element in result.as_numpy("text").reshape(-1)]


def _status_of(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as failure:
        call()
    return failure.value.status(), failure.value.message()


def test_server_is_live_and_ready(client: triton.InferenceServerClient):
    assert client.is_server_live() and client.is_server_ready()


def test_server_metadata_names_attnserve(client: triton.InferenceServerClient):
    assert client.get_server_metadata().name == "attnserve"


def test_served_models_are_ready(client: triton.InferenceServerClient, kserve_server):
    assert client.is_model_ready(kserve_server.summarizer)
    assert client.is_model_ready(kserve_server.captioner)


def test_unknown_model_is_not_ready(client: triton.InferenceServerClient):
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize(
    ("model_attr", "input_name"), [("summarizer", "text"), ("captioner", "image")]
)
def test_model_metadata_describes_bytes_tensors(
    client: triton.InferenceServerClient, kserve_server, model_attr: str, input_name: str
):
    name = getattr(kserve_server, model_attr)
    metadata = client.get_model_metadata(name)
    assert metadata.name == name and len(metadata.versions) >= 1
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (input_name, "BYTES", [-1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("text", "BYTES", [-1])
    ]


def test_model_config_describes_the_same_tensors(
    client: triton.InferenceServerClient, kserve_server
):
    config = client.get_model_config(kserve_server.summarizer).config
    assert [(i.name, list(i.dims)) for i in config.input] == [("text", [-1])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("text", [-1])]


def test_batch_of_texts_reads_as_our_api(client, own_api, kserve_server):
    result = client.infer(
        kserve_server.summarizer,
        [_bytes_input("text", TEXTS, [len(TEXTS)])],
        client_timeout=TIMEOUT_S,
    )
    expected = [
        own_api.Summarize(pb.SummarizeRequest(model=kserve_server.summarizer, text=t)).text
        for t in TEXTS
    ]
    assert list(result.as_numpy("text").shape) == [len(TEXTS)]
    assert _texts(result) == expected


def test_shape_n_by_1_is_answered_with_shape_n_by_1(client, kserve_server):
    result = client.infer(
        kserve_server.summarizer,
        [_bytes_input("text", TEXTS[:2], [2, 1])],
        client_timeout=TIMEOUT_S,
    )
    assert list(result.as_numpy("text").shape) == [2, 1]


def test_parameters_reach_generation(client, own_api, kserve_server):
    result = client.infer(
        kserve_server.summarizer,
        [_bytes_input("text", TEXTS[:1], [1])],
        parameters={"max_new_tokens": 3, "num_beams": 2},
        client_timeout=TIMEOUT_S,
    )
    params = pb.GenerationParams(max_new_tokens=3, num_beams=2)
    expected = own_api.Summarize(
        pb.SummarizeRequest(model=kserve_server.summarizer, text=TEXTS[0], params=params)
    )
    assert expected.output_tokens <= 3
    assert _texts(result) == [expected.text]


def test_caption_reads_as_our_api(client, own_api, kserve_server):
    images = [_png(image) for image, _ in SHAPES]
    result = client.infer(
        kserve_server.captioner,
        [_bytes_input("image", images, [len(images)])],
        client_timeout=TIMEOUT_S,
    )
    expected = [
        own_api.Caption(pb.CaptionRequest(model=kserve_server.captioner, image=image)).text
        for image in images
    ]
    assert _texts(result) == expected


def _accuracy(answers: list[str], references: list[str]) -> float:
    return sum(a == r for a, r in zip(answers, references, strict=True)) / len(references)


def test_demo_summaries_follow_the_task_spec(client, kserve_server):
    if kserve_server.summarizer != "demo-summarizer":
        pytest.skip("the task spec applies to the demo summarizer only")
    result = client.infer(
        kserve_server.summarizer,
        [_bytes_input("text", TEXTS, [len(TEXTS)])],
        client_timeout=TIMEOUT_S,
    )
    assert _accuracy(_texts(result), [summary for _, summary in REPORTS]) >= DEMO_ACCURACY_FLOOR


def test_demo_captions_follow_the_task_spec(client, kserve_server):
    if kserve_server.captioner != "demo-captioner":
        pytest.skip("the task spec applies to the demo captioner only")
    images = [_png(image) for image, _ in SHAPES]
    result = client.infer(
        kserve_server.captioner,
        [_bytes_input("image", images, [len(images)])],
        client_timeout=TIMEOUT_S,
    )
    assert _accuracy(_texts(result), [caption for _, caption in SHAPES]) >= DEMO_ACCURACY_FLOOR


def test_wrong_datatype_is_invalid_argument(client, kserve_server):
    tensor = triton.InferInput("text", [1], "INT32")
    tensor.set_data_from_numpy(np.array([7], dtype=np.int32))
    status, message = _status_of(lambda: client.infer(kserve_server.summarizer, [tensor]))
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "unexpected datatype INT32 for inference input 'text', expecting BYTES" in message


def test_wrong_input_name_is_invalid_argument(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(kserve_server.summarizer, [_bytes_input("foo", ["x"], [1])])
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert f"unexpected inference input 'foo' for model '{kserve_server.summarizer}'" in message


def test_undecodable_image_is_invalid_argument(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(
            kserve_server.captioner, [_bytes_input("image", [b"not an image"], [1])]
        )
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "image could not be decoded" in message


def test_bad_element_of_a_batch_is_named(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(kserve_server.summarizer, [_bytes_input("text", [TEXTS[0], ""], [2])])
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "element 1 of inference input 'text'" in message


def test_unknown_parameter_is_invalid_argument(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(
            kserve_server.summarizer,
            [_bytes_input("text", TEXTS[:1], [1])],
            parameters={"beams": 2},
        )
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "unexpected inference parameter 'beams'" in message


def test_explain_is_refused_with_a_pointer_to_our_api(client, kserve_server):
    status, message = _status_of(
        lambda: client.infer(
            kserve_server.summarizer,
            [_bytes_input("text", TEXTS[:1], [1])],
            parameters={"explain": True},
        )
    )
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "attnserve.v1.AttentionService" in message


def test_protocol_timeout_parameter_is_a_deadline(client, kserve_server):
    status, _ = _status_of(
        lambda: client.infer(
            kserve_server.summarizer, [_bytes_input("text", TEXTS[:1], [1])], timeout=1
        )
    )  # tritonclient's `timeout` is the protocol's parameter, in microseconds
    assert status == str(grpc.StatusCode.DEADLINE_EXCEEDED)


def test_unknown_model_is_not_found(client):
    status, message = _status_of(
        lambda: client.infer("no-such-model", [_bytes_input("text", ["x"], [1])])
    )
    assert status == str(grpc.StatusCode.NOT_FOUND)
    assert "Request for unknown model: 'no-such-model' is not found" in message


def test_a_huge_unknown_model_name_is_still_not_found(client):
    """tritonclient refuses a status header over 16 KiB: the echoed name is cut."""
    status, message = _status_of(
        lambda: client.infer("m" * 30_000, [_bytes_input("text", ["x"], [1])])
    )
    assert status == str(grpc.StatusCode.NOT_FOUND)
    assert "characters cut" in message


def test_triton_only_rpc_is_unimplemented(client):
    status, message = _status_of(lambda: client.get_inference_statistics())
    assert status == str(grpc.StatusCode.UNIMPLEMENTED)
    assert "ModelStatistics" in message


def test_stream_answers_every_request_and_reports_failures_in_band(client, own_api, kserve_server):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index, text in enumerate(TEXTS[:2]):
            client.async_stream_infer(
                kserve_server.summarizer,
                [_bytes_input("text", [text], [1])],
                request_id=str(index),
            )
        client.async_stream_infer(
            kserve_server.summarizer, [_bytes_input("foo", ["x"], [1])], request_id="bad"
        )
        received = [answers.get(timeout=TIMEOUT_S) for _ in range(3)]
    finally:
        client.stop_stream()
    texts = {
        result.get_response().id: _texts(result)[0] for result, error in received if error is None
    }
    errors = [error.message() for result, error in received if error is not None]
    expected = {
        str(index): own_api.Summarize(
            pb.SummarizeRequest(model=kserve_server.summarizer, text=text)
        ).text
        for index, text in enumerate(TEXTS[:2])
    }
    assert texts == expected
    assert len(errors) == 1 and "unexpected inference input 'foo'" in errors[0]
