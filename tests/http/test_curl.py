"""The HTTP port with curl: our API as JSON, server-sent event streams, v2 REST, errors."""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

from export.demo.tasks import make_match_report, render_shapes
from tests.http.conftest import HttpServer
from tests.http.curl import curl

TEXT = make_match_report(np.random.default_rng(500))[0]


def test_health_and_readiness(http_server: HttpServer):
    assert curl(http_server.url + "/v2/health/live").json() == {"live": True}
    assert curl(http_server.url + "/v2/health/ready").status == 200


def test_summarize_answers_as_our_grpc_api(http_server: HttpServer):
    answer = curl(http_server.url + "/v1/summarize", data={"text": TEXT})
    assert answer.status == 200
    body = answer.json()
    assert body["text"] == http_server.summary(TEXT)
    assert body["model"] == http_server.summarizer and body["finish_reason"] in ("eos", "length")


def test_caption_takes_a_base64_image(http_server: HttpServer):
    image, _ = render_shapes(np.random.default_rng(501))
    png = io.BytesIO()
    image.save(png, format="PNG")
    encoded = base64.b64encode(png.getvalue()).decode()
    answer = curl(http_server.url + "/v1/caption", data={"image": encoded})
    assert answer.status == 200 and answer.json()["text"] == http_server.caption(png.getvalue())
    wrapped = base64.encodebytes(png.getvalue()).decode()  # `base64` without -w0: line breaks
    answer = curl(http_server.url + "/v1/caption", data={"image": wrapped})
    assert answer.status == 200 and answer.json()["text"] == http_server.caption(png.getvalue())


def test_an_image_that_is_not_base64_is_400_saying_so(http_server: HttpServer):
    """Protobuf's JSON parser skips what is not base64: "!!!" read as no image ("empty")."""
    answer = curl(http_server.url + "/v1/caption", data={"image": "!!!"})
    assert answer.status == 400 and "image is not base64" in answer.json()["error"]


def test_summarize_stream_is_server_sent_events_of_chunks(http_server: HttpServer):
    answer = curl("-N", http_server.url + "/v1/summarize/stream", data={"text": TEXT})
    events = answer.events()
    assert answer.status == 200 and len(events) > 2
    assert "".join(event.get("text_delta", "") for event in events) == http_server.summary(TEXT)
    assert events[-1]["finish_reason"] in ("eos", "length")


def test_v2_infer_with_json_tensors(http_server: HttpServer):
    request = {
        "id": "7",
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}],
        "parameters": {"max_new_tokens": 5},
    }
    answer = curl(f"{http_server.url}/v2/models/{http_server.summarizer}/infer", data=request)
    assert answer.status == 200
    body = answer.json()
    assert body["id"] == "7" and body["model_name"] == http_server.summarizer
    assert body["outputs"] == [
        {
            "name": "text",
            "datatype": "BYTES",
            "shape": [1],
            "data": [http_server.summary(TEXT, max_new_tokens=5)],
        }
    ]


def test_v2_generate_stream_sends_token_chunks_then_a_final_event(http_server: HttpServer):
    url = f"{http_server.url}/v2/models/{http_server.summarizer}/generate_stream"
    answer = curl("-N", url, data={"text": TEXT})
    *chunks, final = answer.events()
    assert answer.status == 200 and len(chunks) > 1
    assert "".join(chunk["text"] for chunk in chunks) == http_server.summary(TEXT)
    assert final["parameters"]["triton_final_response"] is True
    assert not any(chunk["parameters"]["triton_final_response"] for chunk in chunks)


def test_v2_generate_answers_the_whole_text(http_server: HttpServer):
    url = f"{http_server.url}/v2/models/{http_server.summarizer}/generate"
    answer = curl(url, data={"text": TEXT, "parameters": {"max_new_tokens": 6}})
    assert answer.json()["text"] == http_server.summary(TEXT, max_new_tokens=6)


def test_unknown_model_is_404_with_the_protocol_message(http_server: HttpServer):
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}
    answer = curl(http_server.url + "/v2/models/no-such-model/infer", data={"inputs": [tensor]})
    assert answer.status == 404
    assert answer.json() == {"error": "Request for unknown model: 'no-such-model' is not found"}


@pytest.mark.parametrize("route", ["infer", "generate", "generate_stream"])
def test_unknown_model_is_404_whatever_its_body_holds(http_server: HttpServer, route: str):
    """The model is looked up before the body is read (a bad body was 400 first)."""
    answer = curl(http_server.url + f"/v2/models/no-such-model/{route}", "-d", "{not json")
    assert answer.status == 404
    assert answer.json() == {"error": "Request for unknown model: 'no-such-model' is not found"}
    version = f"/v2/models/{http_server.summarizer}/versions/999/{route}"
    answer = curl(http_server.url + version, "-d", "{not json")
    assert answer.status == 404 and "version 999 is not found" in answer.json()["error"]


def test_unknown_json_field_is_400_naming_it(http_server: HttpServer):
    answer = curl(http_server.url + "/v1/summarize", data={"txt": TEXT})
    assert answer.status == 400 and 'no field named "txt"' in answer.json()["error"]


def test_body_that_is_not_json_is_400(http_server: HttpServer):
    answer = curl(http_server.url + "/v1/summarize", "-d", "{not json")
    assert answer.status == 400 and "not valid JSON" in answer.json()["error"]


V2_TENSOR = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}


def _nested(data: list, depth: int) -> list:
    for _ in range(depth):
        data = [data]
    return data


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"outputs": 5}, "'outputs' must be a list"),
        ({"parameters": {"seed": 1 << 70}}, "parameter 'seed' (1180591620717411303424) is outside"),
        ({"parameters": {"seed": -(1 << 70)}}, "is outside int64 and uint64"),
        ({"inputs": [dict(V2_TENSOR, shape=[True])]}, "'shape' list of int64 integers"),
        ({"inputs": [dict(V2_TENSOR, shape=[1 << 70])]}, "'shape' list of int64 integers"),
        ({"inputs": [dict(V2_TENSOR, data=_nested(["a"], 40))]}, "nested more than 32 lists"),
    ],
)
def test_malformed_v2_bodies_are_400_naming_the_mistake(http_server: HttpServer, fields, message):
    body = {"inputs": [V2_TENSOR], **fields}
    answer = curl(http_server.url + f"/v2/models/{http_server.summarizer}/infer", data=body)
    assert answer.status == 400 and message in answer.json()["error"]


def test_a_body_of_millions_of_tiny_values_is_400_before_it_is_parsed(
    http_server: HttpServer, tmp_path: Path
):
    values, deep = tmp_path / "values.json", tmp_path / "deep.json"
    values.write_text('{"text": "a", "x": [' + "0," * 2_000_000 + "0]}")
    deep.write_text('{"text": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}")
    for body, message in ((values, "at most 10000 are read"), (deep, "nested too deeply")):
        answer = curl(http_server.url + "/v1/summarize", "--data-binary", f"@{body}")
        assert answer.status == 400 and message in answer.json()["error"]


def test_engine_refusal_is_400_with_its_message(http_server: HttpServer):
    answer = curl(http_server.url + "/v1/summarize", data={"text": ""})
    assert answer.status == 400 and answer.json() == {"error": "text is empty"}


def test_stream_request_failing_before_its_first_chunk_gets_its_status(http_server: HttpServer):
    answer = curl(http_server.url + "/v1/summarize/stream", data={"text": TEXT, "model": "nope"})
    assert answer.status == 404 and "nope" in answer.json()["error"]


def test_unknown_route_and_wrong_method_answer_json_errors(http_server: HttpServer):
    assert curl(http_server.url + "/v2/nothing-here").json() == {"error": "Not Found"}
    answer = curl(http_server.url + "/v1/summarize")  # GET
    assert answer.status == 405 and answer.json() == {"error": "Method Not Allowed"}


def _posted(http_server: HttpServer, body_file: Path, *headers: str):
    args = [f"-H{header}" for header in ("Content-Type: application/json", *headers)]
    return curl(*args, "--data-binary", f"@{body_file}", http_server.url + "/v1/summarize")


def test_a_gzip_body_is_read_and_other_encodings_are_415(http_server: HttpServer, tmp_path: Path):
    plain = json.dumps({"text": TEXT}).encode()
    (tmp_path / "gz").write_bytes(gzip.compress(plain))
    answer = _posted(http_server, tmp_path / "gz", "Content-Encoding: gzip")
    assert answer.status == 200 and answer.json()["text"] == http_server.summary(TEXT)
    (tmp_path / "plain").write_bytes(plain)
    answer = _posted(http_server, tmp_path / "plain", "Content-Encoding;")  # an empty value
    assert answer.status == 200 and answer.json()["text"] == http_server.summary(TEXT)
    answer = _posted(http_server, tmp_path / "plain", "Content-Encoding: br")
    assert answer.status == 415 and "'br' is not supported" in answer.json()["error"]
    answer = _posted(http_server, tmp_path / "plain", "Content-Encoding: gzip")  # mislabelled
    assert answer.status == 400 and "not valid gzip" in answer.json()["error"]


def test_a_gzip_body_that_inflates_past_the_limit_is_413(http_server: HttpServer, tmp_path: Path):
    """A few hundred kilobytes that would inflate to more than the message limit (a zip bomb)
    are refused at the limit, not inflated whole."""
    bomb = gzip.compress(b'{"text": "' + b" " * (200 << 20) + b'"}', compresslevel=9)
    (tmp_path / "bomb").write_bytes(bomb)
    answer = _posted(http_server, tmp_path / "bomb", "Content-Encoding: gzip")
    assert answer.status == 413 and "decompressed (gzip)" in answer.json()["error"]
