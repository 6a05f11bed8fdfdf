"""A real attnserve server with its HTTP port open (127.0.0.1, free ports) on the demo models,
as `make run` serves them, for clients that speak HTTP: curl and tritonclient.http."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc
from tests.fixtures.inprocess_server import serving
from tests.fixtures.models_env import demo_models_dir


@dataclass
class HttpServer:
    url: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT, as tritonclient.http takes it
    target: str  # its gRPC port, to compare answers with our own API
    summarizer: str  # the default model of each task
    captioner: str

    def _own_api(self) -> pb_grpc.AttentionServiceStub:
        return pb_grpc.AttentionServiceStub(grpc.insecure_channel(self.target))

    def summary(self, text: str, **params: int) -> str:
        """What our gRPC API answers: every HTTP path must answer the same."""
        message = pb.SummarizeRequest(text=text, params=pb.GenerationParams(**params))
        return self._own_api().Summarize(message, timeout=120).text

    def caption(self, image: bytes) -> str:
        return self._own_api().Caption(pb.CaptionRequest(image=image), timeout=120).text


@pytest.fixture(scope="session")
def http_server() -> Iterator[HttpServer]:
    with serving(demo_models_dir(), server_overrides={"http_port": 0}) as server:
        assert server.engine is not None and server.server.rest is not None
        defaults = {info.task: info.name for info in server.engine.models() if info.is_default}
        port = server.server.rest.port
        yield HttpServer(
            f"http://127.0.0.1:{port}",
            f"127.0.0.1:{port}",
            server.target,
            defaults["summarization"],
            defaults["captioning"],
        )
