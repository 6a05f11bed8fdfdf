"""The v2 REST protocol, spoken to by the unmodified tritonclient.http (binary tensors, its
default, and JSON), on the demo models; answers must read as through our gRPC API."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from export.demo.tasks import make_match_report, render_shapes
from tests.http.conftest import HttpServer

TEXTS = [make_match_report(np.random.default_rng(seed))[0] for seed in range(300, 303)]
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def client(http_server: HttpServer) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(
        http_server.host_port, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
    )


def _bytes_input(name: str, elements: list, binary: bool = True) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def _texts(result: triton_http.InferResult) -> list[str]:
    """Binary outputs come as bytes, JSON ones as str (as from Triton)."""
    elements = result.as_numpy("text").reshape(-1)
    return [e.decode() if isinstance(e, bytes) else e for e in elements]


def _failure(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as failure:
        call()
    return failure.value


def test_server_and_models_are_live_and_ready(client, http_server):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(http_server.summarizer)
    assert not client.is_model_ready("no-such-model")


def test_metadata_and_config_describe_bytes_tensors(client, http_server):
    metadata = client.get_model_metadata(http_server.summarizer)
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    config = client.get_model_config(http_server.captioner)
    assert config["input"][0]["name"] == "image" and config["max_batch_size"] == 0
    assert client.get_server_metadata()["name"] == "attnserve"


def test_binary_tensors_read_as_our_api(client, http_server):
    result = client.infer(http_server.summarizer, [_bytes_input("text", TEXTS)])
    assert _texts(result) == [http_server.summary(text) for text in TEXTS]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_read_as_our_api(client, http_server, algorithm: str):
    """tritonclient's request_compression_algorithm (Content-Encoding), as Triton accepts it."""
    result = client.infer(
        http_server.summarizer,
        [_bytes_input("text", TEXTS[:2])],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    assert _texts(result) == [http_server.summary(text) for text in TEXTS[:2]]


def test_json_tensors_read_as_our_api(client, http_server):
    output = triton_http.InferRequestedOutput("text", binary_data=False)
    result = client.infer(
        http_server.summarizer,
        [_bytes_input("text", TEXTS[:1], binary=False)],
        outputs=[output],
        parameters={"max_new_tokens": 4},
    )
    assert _texts(result) == [http_server.summary(TEXTS[0], max_new_tokens=4)]
    assert result.get_response()["outputs"][0]["data"] == _texts(result)  # JSON, not binary


def test_image_is_captioned(client, http_server):
    image, _ = render_shapes(np.random.default_rng(400))
    png = io.BytesIO()
    image.save(png, format="PNG")
    result = client.infer(http_server.captioner, [_bytes_input("image", [png.getvalue()])])
    assert _texts(result) == [http_server.caption(png.getvalue())]


def test_reserved_parameters_are_accepted(client, http_server):
    result = client.infer(
        http_server.summarizer,
        [_bytes_input("text", TEXTS[:1])],
        sequence_id=5,
        sequence_start=True,
        sequence_end=True,
        priority=1,
        timeout=int(TIMEOUT_S * 1e6),
    )
    assert _texts(result) == [http_server.summary(TEXTS[0])]


def test_unknown_model_is_404(client):
    failure = _failure(lambda: client.infer("no-such-model", [_bytes_input("text", ["x"])]))
    assert failure.status() == "404"
    assert "Request for unknown model: 'no-such-model' is not found" in failure.message()


def test_bad_input_is_400_with_the_protocol_wording(client, http_server):
    tensor = triton_http.InferInput("text", [1], "INT32")
    tensor.set_data_from_numpy(np.array([7], dtype=np.int32))
    failure = _failure(lambda: client.infer(http_server.summarizer, [tensor]))
    assert failure.status() == "400"
    assert "unexpected datatype INT32 for inference input 'text', expecting BYTES" in (
        failure.message()
    )


def test_protocol_timeout_is_504(client, http_server):
    failure = _failure(
        lambda: client.infer(http_server.summarizer, [_bytes_input("text", TEXTS[:1])], timeout=1)
    )
    assert failure.status() == "504"


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda c, model: c.load_model(model), "RepositoryModelLoad"),
        (lambda c, model: c.unload_model(model), "RepositoryModelUnload"),
        (lambda c, model: c.get_model_repository_index(), "RepositoryIndex"),
        (lambda c, model: c.get_inference_statistics(), "ModelStatistics"),
        (lambda c, model: c.get_inference_statistics(model), "ModelStatistics"),
        (lambda c, model: c.get_system_shared_memory_status(), "SystemSharedMemory"),
        (lambda c, model: c.unregister_cuda_shared_memory(), "CudaSharedMemory"),
        (lambda c, model: c.get_trace_settings(), "TraceSetting"),
        (lambda c, model: c.get_log_settings(), "LogSettings"),
    ],
)
def test_triton_extensions_we_do_not_serve_are_501_as_on_grpc(client, http_server, call, method):
    """They were 404s: `/v2/models/stats` read as a model named "stats"."""
    failure = _failure(lambda: call(client, http_server.summarizer))
    assert failure.status() == "501"
    assert f"{method} is a Triton extension that attnserve does not serve" in failure.message()
