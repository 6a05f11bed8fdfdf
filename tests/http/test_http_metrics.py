"""Requests on the HTTP port are counted in attnserve_requests_total and
attnserve_request_duration_seconds like RPCs: labelled with the answering model, the route
template (a fixed set: unknown paths count as "other") and the gRPC status name the HTTP status
stands for. Health checks are not counted."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest

from export.demo.tasks import render_shapes
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.fixtures.models_env import demo_models_dir
from tests.http.curl import curl

REPORT = "Kelso played Morley in York on Friday. Morley scored 2 goals. Kelso scored 4 goals."


@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    with serving(demo_models_dir(), server_overrides={"http_port": 0}) as running:
        yield running


def _url(server: InProcessServer, path: str) -> str:
    assert server.server.rest is not None
    return f"http://127.0.0.1:{server.server.rest.port}{path}"


def _counts(server: InProcessServer) -> dict[tuple[str, str, str], float]:
    """(model, method, code) -> calls finished."""
    found = {}
    for family in server.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "attnserve_requests_total":
                labels = sample.labels
                found[labels["model"], labels["method"], labels["code"]] = sample.value
    return found


def _added(before: dict, after: dict) -> dict[tuple[str, str, str], float]:
    return {key: n - before.get(key, 0.0) for key, n in after.items() if n != before.get(key)}


def test_a_summary_is_counted_with_its_model_route_and_code(server):
    model = next(i.name for i in server.engine.models() if i.task == "summarization")
    before = _counts(server)
    answer = curl(_url(server, "/v1/summarize"), data={"model": model, "text": REPORT})
    assert answer.status == 200, answer.body
    refused = curl(_url(server, "/v1/summarize"), data={"model": model, "text": ""})
    assert refused.status == 400, refused.body
    assert _added(before, _counts(server)) == {
        (model, "POST /v1/summarize", "OK"): 1.0,
        (model, "POST /v1/summarize", "INVALID_ARGUMENT"): 1.0,
    }
    durations = [
        sample
        for family in server.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "attnserve_request_duration_seconds_count"
        and sample.labels["method"] == "POST /v1/summarize"
    ]
    assert sum(sample.value for sample in durations) >= 2


def test_v2_infer_and_unknown_paths_and_health(server):
    model = next(i.name for i in server.engine.models() if i.task == "summarization")
    before = _counts(server)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [REPORT]}]}
    assert curl(_url(server, f"/v2/models/{model}/infer"), data=body).status == 200
    assert curl(_url(server, "/v2/models/no-such-model/infer"), data=body).status == 404
    for made_up in ("/made/up/1", "/made/up/2"):
        assert curl(_url(server, made_up)).status == 404
    assert curl(_url(server, "/v2/health/ready")).status == 200
    assert _added(before, _counts(server)) == {
        (model, "POST /v2/models/{name}/infer", "OK"): 1.0,
        ("", "POST /v2/models/{name}/infer", "NOT_FOUND"): 1.0,
        ("", "other", "NOT_FOUND"): 2.0,
    }


def test_a_stream_ending_on_an_error_event_is_counted_under_that_error(server):
    """The 200 is sent with the first token; a failure after it (here the request's own
    settings ban every token of the captioner's 15 by the 14th) ends the stream with an
    `error` event, and the request counts under the error's status, as on gRPC."""
    model = next(i.name for i in server.engine.models() if i.task == "captioning")
    image, _ = render_shapes(np.random.default_rng(7))
    png = io.BytesIO()
    image.save(png, format="PNG")
    stuck = dict(
        do_sample=True, seed=1, no_repeat_ngram_size=1, min_new_tokens=20, max_new_tokens=20
    )
    body = {"image": base64.b64encode(png.getvalue()).decode(), "params": stuck}
    before = _counts(server)
    answer = curl("-N", _url(server, "/v1/caption/stream"), data=body)
    assert answer.status == 200 and "event: error" in answer.body, answer.body
    assert '"status": "INVALID_ARGUMENT"' in answer.body
    assert _added(before, _counts(server)) == {
        (model, "POST /v1/caption/stream", "INVALID_ARGUMENT"): 1.0
    }
