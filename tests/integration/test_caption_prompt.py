"""Conditional captioning through a real server: `CaptionRequest.prompt` unary and streamed, the
KServe `prompt` parameter, and the status codes of bad prompts. Token-level parity with
transformers' generate() is in tests/e2e/test_caption_prompt.py."""

from __future__ import annotations

import base64
import http.client
import json
import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import CAPTIONER, SUMMARIZER, TEXT

PROMPT = "w7 w21 w7"
PARAMS = {"max_new_tokens": 6, "timeout": 60}
POSITIONS = 64  # the tiny captioner's decoder positions (GPT-2 n_positions)


@pytest.fixture(scope="module")
def kserve(server: InProcessServer) -> Iterator[triton.InferenceServerClient]:
    yield triton.InferenceServerClient(server.target)


def _image_input(image: bytes) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
    return tensor


def test_the_caption_continues_the_prompt_and_counts_only_new_tokens(
    client: AttnserveClient, png_image: bytes
):
    plain = client.caption(png_image, **PARAMS)
    answer = client.caption(png_image, prompt=PROMPT, **PARAMS)
    assert answer.text.startswith(PROMPT)
    assert answer.output_tokens == len(answer.token_ids) <= PARAMS["max_new_tokens"]
    assert answer.input_tokens == plain.input_tokens + len(PROMPT.split())


@pytest.mark.parametrize("num_beams", [1, 3])
def test_streamed_deltas_join_to_the_unary_caption(
    client: AttnserveClient, png_image: bytes, num_beams: int
):
    unary = client.caption(png_image, prompt=PROMPT, num_beams=num_beams, **PARAMS)
    chunks = list(client.caption_stream(png_image, prompt=PROMPT, num_beams=num_beams, **PARAMS))
    assert "".join(chunk.text_delta for chunk in chunks) == unary.text
    assert [t for chunk in chunks for t in chunk.token_ids] == list(unary.token_ids)
    assert chunks[0].text_delta.startswith(PROMPT)
    assert (chunks[-1].input_tokens, chunks[-1].output_tokens) == (
        unary.input_tokens,
        unary.output_tokens,
    )


def test_explain_attributes_the_generated_tokens_only(client: AttnserveClient, png_image: bytes):
    answer = client.caption(png_image, prompt=PROMPT, explain=True, **PARAMS)
    assert [t.token_id for t in answer.attribution.tokens] == list(answer.token_ids)


def test_kserve_prompt_parameter_answers_as_our_api(
    kserve: triton.InferenceServerClient, client: AttnserveClient, png_image: bytes
):
    result = kserve.infer(
        CAPTIONER,
        [_image_input(png_image)],
        parameters={"prompt": PROMPT, "max_new_tokens": PARAMS["max_new_tokens"]},
    )
    ours = client.caption(png_image, prompt=PROMPT, **PARAMS)
    assert result.as_numpy("text")[0].decode() == ours.text


def test_kserve_streamed_prompted_caption_joins_to_the_unary_text(
    kserve: triton.InferenceServerClient, client: AttnserveClient, png_image: bytes
):
    responses: queue.Queue = queue.Queue()
    kserve.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        kserve.async_stream_infer(
            CAPTIONER,
            [_image_input(png_image)],
            request_id="1",
            parameters={"stream": True, "prompt": PROMPT, "max_new_tokens": 6},
        )
        pieces = []
        while True:
            result, error = responses.get(timeout=60)
            assert error is None, error
            pieces.append(result.as_numpy("text")[0].decode())
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
    finally:
        kserve.stop_stream()
    assert "".join(pieces) == client.caption(png_image, prompt=PROMPT, **PARAMS).text


def _invalid(call) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return raised.value.details()


@pytest.mark.parametrize(
    ("prompt", "phrase"),
    [
        (" ".join(["w1"] * (POSITIONS - 1)), f"at most {POSITIONS - 2} prompt tokens"),
        ("\x00\x07\t ", "prompt has no printable character"),
        ("w7 photography w21", "prompt holds 'photography', which this model's tokenizer does"),
    ],
    ids=["too-long", "unprintable", "unknown-word"],
)
def test_bad_prompts_are_invalid_arguments(
    client: AttnserveClient, png_image: bytes, prompt: str, phrase: str
):
    assert phrase in _invalid(lambda: client.caption(png_image, prompt=prompt, **PARAMS))


def test_a_prompt_leaving_too_few_positions_for_max_new_tokens_is_invalid(
    client: AttnserveClient, png_image: bytes
):
    prompt = " ".join(["w1"] * 40)
    details = _invalid(lambda: client.caption(png_image, prompt=prompt, max_new_tokens=30))
    assert "max_new_tokens must be <= 23" in details


def test_a_prompt_that_is_not_utf8_is_invalid(server: InProcessServer, png_image: bytes):
    """protobuf clients refuse to send such a string: the bytes are written by hand."""
    field_5 = bytes([5 << 3 | 2, 2]) + b"\xff\xfe"  # prompt = two bytes that are not UTF-8
    message = pb.CaptionRequest(image=png_image).SerializeToString() + field_5
    with grpc.insecure_channel(server.target) as channel:
        caption = channel.unary_unary(
            "/attnserve.v1.AttentionService/Caption",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        _invalid(lambda: caption(message, timeout=60))


def _kserve_invalid(call) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT", raised.value.message()
    return raised.value.message()


def test_a_prompt_for_a_summarizer_is_invalid(kserve: triton.InferenceServerClient):
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([TEXT.encode()], dtype=np.object_))
    message = _kserve_invalid(
        lambda: kserve.infer(SUMMARIZER, [tensor], parameters={"prompt": "w1"})
    )
    assert "prompt is for captioning models" in message


def test_a_kserve_prompt_must_be_a_string(kserve: triton.InferenceServerClient, png_image: bytes):
    message = _kserve_invalid(
        lambda: kserve.infer(CAPTIONER, [_image_input(png_image)], parameters={"prompt": 7})
    )
    assert "parameter 'prompt' must be sent as string_param" in message


@pytest.fixture(scope="module")
def rest_port(models_dir: Path) -> Iterator[int]:
    with serving(models_dir, server_overrides={"http_port": 0}) as running:
        assert running.server.rest is not None
        yield running.server.rest.port


def _post(port: int, path: str, body: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, body=body)
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


def test_rest_caption_takes_the_prompt(rest_port: int, client: AttnserveClient, png_image: bytes):
    body = {
        "image": base64.b64encode(png_image).decode(),
        "prompt": PROMPT,
        "params": {"max_new_tokens": PARAMS["max_new_tokens"]},
    }
    status, answer = _post(rest_port, "/v1/caption", json.dumps(body))
    assert status == 200, answer
    assert answer["text"] == client.caption(png_image, prompt=PROMPT, **PARAMS).text


def test_rest_prompt_with_a_lone_surrogate_is_a_400(rest_port: int, png_image: bytes):
    body = json.dumps({"image": base64.b64encode(png_image).decode(), "prompt": "w1 \ud800"})
    status, answer = _post(rest_port, "/v1/caption", body)
    assert status == 400 and "Unpaired surrogate" in answer["error"], answer


def test_v2_rest_prompt_parameter_with_a_lone_surrogate_is_a_400(rest_port: int):
    body = '{"text": "w1 w2", "parameters": {"prompt": "\\ud800"}}'
    status, answer = _post(rest_port, f"/v2/models/{SUMMARIZER}/generate", body)
    assert status == 400, answer
    assert answer["error"] == "parameter 'prompt' is not valid UTF-8 (it holds a lone surrogate)"
