"""grpc.health.v1 per-service status through the server's life, and server reflection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.api.servicer import SERVICE_NAME
from service.client import AttnserveClient
from service.engine.engine import Engine
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import SHORT_REQUEST, TEXT

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as opened:
        yield opened


def health_status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_a_ready_server_reports_serving(channel: grpc.Channel, service: str):
    assert health_status(channel, service) == SERVING


def test_health_of_an_unknown_service_is_not_found(channel: grpc.Channel):
    with pytest.raises(grpc.RpcError) as raised:
        health_status(channel, "no.such.Service")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service(channel: grpc.Channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_reflection_describes_the_attention_service(channel: grpc.Channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    service = database.FindFileContainingSymbol(SERVICE_NAME).service[0]

    assert [method.name for method in service.method] == [
        "Summarize",
        "SummarizeStream",
        "Caption",
        "CaptionStream",
        "ListModels",
    ]


def test_a_loading_server_is_not_serving_and_answers_unavailable(models_dir: Path):
    with (
        serving(models_dir, load=False) as loading,
        grpc.insecure_channel(loading.target) as channel,
    ):
        statuses = [health_status(channel, name) for name in ("", SERVICE_NAME)]
        with pytest.raises(grpc.RpcError) as raised:
            AttnserveClient(loading.target, channel).summarize(TEXT, **SHORT_REQUEST)

        assert statuses == [NOT_SERVING, NOT_SERVING]
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "loading" in raised.value.details()


def test_a_loaded_server_turns_serving(models_dir: Path):
    with (
        serving(models_dir, load=False) as loading,
        grpc.insecure_channel(loading.target) as channel,
    ):
        loading.serve(Engine.load(models_dir, loading.settings.engine, loading.metrics))

        assert [health_status(channel, name) for name in ("", SERVICE_NAME)] == [SERVING, SERVING]
        assert AttnserveClient(loading.target, channel).summarize(TEXT, **SHORT_REQUEST).text
