"""Long inputs: refused with the limit by default, or cut to their first tokens on request
(`truncate`, per request or as the server's default), reported in the answer on both APIs."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer, serving

MAX_INPUT_TOKENS = 2048  # the tiny summarizer's limit
LONG_TEXT = " ".join(f"w{1 + i % 60}" for i in range(MAX_INPUT_TOKENS + 50))
PARAMS = {"max_new_tokens": 6, "timeout": 30}


def words(count: int) -> str:
    return " ".join(LONG_TEXT.split()[:count])


@pytest.fixture(scope="module")
def specials(client: AttnserveClient) -> int:
    """How many special tokens the tokenizer adds around a text."""
    return client.summarize("w1", **PARAMS).input_tokens - 1


def test_a_text_over_the_limit_is_refused_by_default(client: AttnserveClient):
    with pytest.raises(grpc.RpcError) as refused:
        client.summarize(LONG_TEXT, **PARAMS)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_INPUT_TOKENS} input tokens" in refused.value.details()
    assert "truncate" in refused.value.details()


def test_truncate_keeps_the_first_tokens_and_says_so(client: AttnserveClient, specials: int):
    answer = client.summarize(LONG_TEXT, truncate=10, **PARAMS)
    assert answer.truncated and answer.input_tokens == 10
    same_words = client.summarize(words(10 - specials), **PARAMS)
    assert not same_words.truncated
    assert list(answer.token_ids) == list(same_words.token_ids)


def test_truncate_beyond_the_model_cuts_at_the_models_limit(client: AttnserveClient):
    answer = client.summarize(LONG_TEXT, truncate=1_000_000, **PARAMS)
    assert answer.truncated and answer.input_tokens == MAX_INPUT_TOKENS


def test_truncate_zero_refuses_even_when_the_server_truncates(models_dir: Path):
    with serving(models_dir, truncate=12) as server, AttnserveClient(server.target) as c:
        assert c.summarize(LONG_TEXT, **PARAMS).input_tokens == 12  # the server's default
        with pytest.raises(grpc.RpcError) as refused:
            c.summarize(LONG_TEXT, truncate=0, **PARAMS)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stream_reports_the_truncation_on_its_last_chunk(client: AttnserveClient):
    chunks = list(client.summarize_stream(LONG_TEXT, truncate=10, **PARAMS))
    assert chunks[-1].truncated and chunks[-1].input_tokens == 10


@pytest.fixture(scope="module")
def kserve(server: InProcessServer) -> Iterator[triton.InferenceServerClient]:
    yield triton.InferenceServerClient(server.target)


def _infer(kserve: triton.InferenceServerClient, texts: list[str], **parameters: int):
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return kserve.infer("tiny-summarizer", [tensor], parameters={"max_new_tokens": 6, **parameters})


def test_kserve_truncate_parameter_and_truncated_response_parameter(kserve, specials: int):
    result = _infer(kserve, [LONG_TEXT, "w1 w2"], truncate=10)
    assert result.get_response().parameters["truncated"].bool_param
    alone = _infer(kserve, [words(10 - specials)])
    assert result.as_numpy("text")[0] == alone.as_numpy("text")[0]
    assert "truncated" not in alone.get_response().parameters
    with pytest.raises(triton.InferenceServerException, match="at most 2048 input tokens"):
        _infer(kserve, [LONG_TEXT])


def test_a_streamed_kserve_answer_reports_the_truncation_on_its_final_response(kserve):
    """ModelStreamInfer with `stream: true` (decoupled style) dropped `truncated`."""
    answers: queue.Queue = queue.Queue()
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([LONG_TEXT.encode()], dtype=np.object_))
    kserve.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        kserve.async_stream_infer(
            "tiny-summarizer",
            [tensor],
            parameters={"max_new_tokens": 6, "truncate": 10, "stream": True},
            enable_empty_final_response=True,
        )
        while True:
            result, error = answers.get(timeout=30)
            assert error is None, error
            parameters = result.get_response().parameters
            if parameters["triton_final_response"].bool_param:
                break
    finally:
        kserve.stop_stream()
    assert parameters["truncated"].bool_param
    assert parameters["input_tokens"].int64_param == 10
