"""Request contents (texts, images) reach the log only with --log-requests."""

from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path

import grpc
import pytest

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service.api.interceptors.request_log import TEXT_CLIP, describe_message
from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving

SECRET_TEXT = "w1 w2 confidential-w3"
IMAGE = b"\x89PNG not really an image"
CALL_TIMEOUT_S = 10


def send_a_text_and_a_bad_image(target: str) -> None:
    with AttnserveClient(target) as client:
        client.summarize(SECRET_TEXT, max_new_tokens=2, timeout=CALL_TIMEOUT_S)
        with pytest.raises(grpc.RpcError):
            client.caption(IMAGE, timeout=CALL_TIMEOUT_S)


def test_request_contents_are_not_logged_by_default(
    models_dir: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with serving(models_dir) as server:
        send_a_text_and_a_bad_image(server.target)

    assert "confidential" not in caplog.text
    assert "PNG" not in caplog.text


def test_log_requests_logs_texts_and_image_sizes(
    models_dir: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    with serving(models_dir, server_overrides={"log_requests": True}) as server:
        send_a_text_and_a_bad_image(server.target)

    assert f"text={SECRET_TEXT!r}" in caplog.text
    assert f"image=<{len(IMAGE)} bytes>" in caplog.text
    assert "PNG" not in caplog.text


def send_over_http(port: int) -> None:
    for path, body in (
        ("/v1/summarize", {"text": SECRET_TEXT, "params": {"max_new_tokens": 2}}),
        ("/v2/models/tiny-summarizer/generate", {"text": SECRET_TEXT + " v2"}),
    ):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT_S)
        connection.request("POST", path, body=json.dumps(body))
        assert connection.getresponse().status == 200
        connection.close()


@pytest.mark.parametrize("enabled", [False, True])
def test_the_http_port_logs_requests_as_the_grpc_port_does(
    models_dir: Path, caplog: pytest.LogCaptureFixture, enabled: bool
):
    """--log-requests logged nothing of the HTTP port's requests."""
    caplog.set_level(logging.DEBUG)
    overrides = {"log_requests": enabled, "http_port": 0}
    with serving(models_dir, server_overrides=overrides) as server:
        assert server.server.rest is not None
        send_over_http(server.server.rest.port)

    if not enabled:
        assert "confidential" not in caplog.text
        return
    assert "POST /v1/summarize from 127.0.0.1:" in caplog.text
    assert f"text={SECRET_TEXT!r}" in caplog.text
    assert "POST /v2/models/tiny-summarizer/generate from 127.0.0.1:" in caplog.text
    assert "bytes_contents=[<24 bytes>]" in caplog.text  # KServe tensors: by size, as on gRPC


def test_a_kserve_request_is_described_with_its_tensors_parameters_and_sizes():
    request = kserve_pb.ModelInferRequest(model_name="tiny-captioner", raw_input_contents=[IMAGE])
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.parameters["max_new_tokens"].int64_param = 4

    described = describe_message(request)

    assert described == (
        "model_name='tiny-captioner' parameters={'max_new_tokens': {int64_param=4}} "
        "inputs=[{name='image' datatype='BYTES' shape=[1]}] "
        f"raw_input_contents=[<{len(IMAGE)} bytes>]"
    )


def test_a_long_text_is_clipped_in_the_log():
    described = describe_message(pb.SummarizeRequest(text="w" * (TEXT_CLIP + 50)))

    assert described == f"text={'w' * TEXT_CLIP!r}...<{TEXT_CLIP + 50} chars>"
