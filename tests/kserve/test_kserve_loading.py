"""The KServe v2 service while the models are still loading: live, not ready, refusing work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.fixtures.inprocess_server import serving


@pytest.fixture(scope="module")
def loading_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[triton.InferenceServerClient]:
    with serving(Path(tmp_path_factory.mktemp("no-models")), load=False) as server:
        yield triton.InferenceServerClient(server.target)


def test_server_is_live_but_not_ready_while_loading(loading_client: triton.InferenceServerClient):
    assert loading_client.is_server_live()
    assert not loading_client.is_server_ready()


def test_no_model_is_ready_while_loading(loading_client: triton.InferenceServerClient):
    assert not loading_client.is_model_ready("demo-summarizer")


def test_inference_while_loading_is_unavailable(loading_client: triton.InferenceServerClient):
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"a report"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as failure:
        loading_client.infer("demo-summarizer", [text])
    assert failure.value.status() == str(grpc.StatusCode.UNAVAILABLE)
    assert "loading" in failure.value.message()


def test_streamed_inference_while_loading_answers_each_request_unavailable(
    loading_client: triton.InferenceServerClient,
):
    answers: list[tuple[object, object]] = []
    loading_client.start_stream(callback=lambda result, error: answers.append((result, error)))
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"a report"], dtype=np.object_))
    for index in range(3):
        loading_client.async_stream_infer("demo-summarizer", [text], request_id=str(index))
    loading_client.stop_stream()  # waits for the answers
    assert len(answers) == 3
    assert all("loading" in str(error) for _, error in answers)
