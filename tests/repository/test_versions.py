"""Several versions of a model served at once: the highest answers by default, a request may
name another, and an unknown one is NOT_FOUND naming those served (our API and KServe v2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import SHORT_REQUEST, TEXT
from tests.repository.repository import (
    CAPTIONER,
    SUMMARIZER,
    answering_version,
    copy_model,
    png_image,
    publish,
    version_dir,
)


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, summarizer_dir: Path, captioner_dir: Path
) -> Iterator[str]:
    """A server (no polling) on summarizer versions 1 and 2 and captioner version 1."""
    root = tmp_path_factory.mktemp("two-versions")
    for version in (1, 2):
        publish(summarizer_dir, root, SUMMARIZER, version)
    copy_model(captioner_dir, version_dir(root, CAPTIONER, 1))
    with serving(root, server_overrides={"keep_versions": 2}) as server:
        yield server.target


@pytest.fixture(scope="module")
def client(target: str) -> Iterator[AttnserveClient]:
    with AttnserveClient(target) as connected:
        yield connected


@pytest.fixture(scope="module")
def triton_client(target: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(target)


def test_list_models_shows_every_version_and_the_highest_as_default(client: AttnserveClient):
    summarizers = [m for m in client.list_models() if m.name == SUMMARIZER]

    assert [(m.version, m.is_default) for m in summarizers] == [("1", False), ("2", True)]


def test_a_request_naming_no_version_gets_the_highest(client: AttnserveClient):
    assert answering_version(client) == "2"


def test_a_request_naming_an_older_version_gets_it(client: AttnserveClient):
    assert answering_version(client, version="1") == "1"


def test_a_stream_naming_a_version_reports_it_in_its_last_chunk(client: AttnserveClient):
    chunks = list(client.summarize_stream(TEXT, model=SUMMARIZER, version="1", **SHORT_REQUEST))

    assert chunks[-1].model_version == "1"


def test_a_caption_request_can_name_its_version(client: AttnserveClient):
    answer = client.caption(png_image(), model=CAPTIONER, version="1", **SHORT_REQUEST)

    assert (answer.model, answer.model_version) == (CAPTIONER, "1")


def test_an_unknown_version_is_not_found_naming_the_served_ones(client: AttnserveClient):
    with pytest.raises(grpc.RpcError) as failure:
        answering_version(client, version="3")

    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no version '3'" in failure.value.details()
    assert "served versions: 1, 2" in failure.value.details()


def test_kserve_model_ready_answers_per_version(triton_client: triton.InferenceServerClient):
    ready = {v: triton_client.is_model_ready(SUMMARIZER, v) for v in ("", "1", "2", "3")}

    assert ready == {"": True, "1": True, "2": True, "3": False}


def test_kserve_metadata_lists_the_versions(triton_client: triton.InferenceServerClient):
    assert list(triton_client.get_model_metadata(SUMMARIZER).versions) == ["1", "2"]


@pytest.mark.parametrize("asked, answered", [("", "2"), ("1", "1"), ("2", "2")])
def test_kserve_inference_honours_model_version(
    triton_client: triton.InferenceServerClient, asked: str, answered: str
):
    result = triton_client.infer(SUMMARIZER, [_text_input()], model_version=asked)

    assert result.get_response().model_version == answered


def test_kserve_unknown_version_is_not_found(triton_client: triton.InferenceServerClient):
    with pytest.raises(InferenceServerException) as failure:
        triton_client.infer(SUMMARIZER, [_text_input()], model_version="3")

    assert failure.value.status() == str(grpc.StatusCode.NOT_FOUND)
    assert "served versions: 1, 2" in failure.value.message()


def _text_input() -> triton.InferInput:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([TEXT.encode()], dtype=np.object_))
    return tensor
