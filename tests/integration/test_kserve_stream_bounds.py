"""One ModelStreamInfer call holds a bounded share of the server: at most --max-queue of its
requests run at once (the next ones wait in the client's sends, not in the server's queue),
so a burst on one stream is paced instead of refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb import grpc_service_pb2_grpc as kserve_grpc
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import SUMMARIZER, TEXT

MAX_QUEUE = 4
BURST = 40


@pytest.fixture(scope="module")
def small_queue_server(models_dir: Path) -> Iterator[InProcessServer]:
    with serving(models_dir, max_queue=MAX_QUEUE) as running:
        yield running


def _request(index: int) -> kserve_pb.ModelInferRequest:
    request = kserve_pb.ModelInferRequest(model_name=SUMMARIZER, id=str(index))
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(TEXT.encode())
    request.parameters["max_new_tokens"].int64_param = 8
    return request


def test_a_burst_on_one_stream_is_paced_not_refused(small_queue_server: InProcessServer):
    """Ten times the queue's size sent at once on one stream: every request answered, none
    refused as a full queue (each of them was, beyond the first few, before the bound)."""
    with grpc.insecure_channel(small_queue_server.target) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        requests = (_request(i) for i in range(BURST))
        responses = list(stub.ModelStreamInfer(requests, timeout=120))

    assert [r.error_message for r in responses] == [""] * BURST
    assert sorted(int(r.infer_response.id) for r in responses) == list(range(BURST))
