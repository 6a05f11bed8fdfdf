"""HTTP statuses that need no model: the status table mirrors our gRPC codes, a loading server
answers 503 (live, not ready), and a body over the message limit is 413."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service import errors
from service.api.rest.calls import HTTP_STATUS
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.http.curl import curl

EXPECTED_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
MESSAGE_LIMIT_BYTES = 4096


def test_every_error_has_the_http_status_mirroring_its_grpc_code():
    statuses = {cls.status for cls in errors.ServeError.__subclasses__()} | {errors.INTERNAL}
    assert {status: HTTP_STATUS[status] for status in statuses} == EXPECTED_HTTP_STATUS


@pytest.fixture(scope="module")
def loading_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """A server still loading its models (it never will: the test does not call `serve`)."""
    overrides = {"http_port": 0, "max_message_bytes": MESSAGE_LIMIT_BYTES}
    with serving(tmp_path_factory.mktemp("models"), load=False, server_overrides=overrides) as s:
        yield s


def _url(server: InProcessServer, path: str) -> str:
    assert server.server.rest is not None
    return f"http://127.0.0.1:{server.server.rest.port}{path}"


def test_a_loading_server_is_live_but_not_ready(loading_server: InProcessServer):
    assert curl(_url(loading_server, "/v2/health/live")).status == 200
    assert curl(_url(loading_server, "/v2/health/ready")).json() == {"ready": False}
    assert curl(_url(loading_server, "/v2/health/ready")).status == 503


def test_requests_while_loading_are_503_retry_later(loading_server: InProcessServer):
    answer = curl(_url(loading_server, "/v1/summarize"), data={"text": "some text"})
    assert answer.status == 503 and "still loading" in answer.json()["error"]


def test_a_body_over_the_message_limit_is_413(loading_server: InProcessServer):
    answer = curl(_url(loading_server, "/v1/summarize"), data={"text": "x" * MESSAGE_LIMIT_BYTES})
    assert answer.status == 413 and f"{MESSAGE_LIMIT_BYTES} bytes" in answer.json()["error"]
