"""The bearer-token check on a real server: UNAUTHENTICATED without a token, PERMISSION_DENIED
with a wrong one, served with a right one; health and reflection open unless configured not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service._pb import grpc_service_pb2 as kserve_pb
from service._pb import grpc_service_pb2_grpc as kserve_grpc
from service.api.interceptors.auth import load_tokens
from service.client import AttnserveClient
from service.config import SecuritySettings, SettingsError
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.security.conftest import TOKENS

TEXT = "w1 w2 w3 w4"
CALL_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def server(models_dir: Path, tokens_file: Path) -> Iterator[InProcessServer]:
    security = SecuritySettings(auth_tokens_file=tokens_file)
    with serving(models_dir, server_overrides={"security": security}) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as opened:
        yield opened


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def summarize_code(server: InProcessServer, token: str | None) -> grpc.StatusCode:
    with AttnserveClient(server.target, token=token) as client:
        try:
            client.summarize(TEXT, max_new_tokens=2, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_a_call_without_a_token_is_unauthenticated(server: InProcessServer):
    assert summarize_code(server, None) == grpc.StatusCode.UNAUTHENTICATED


def test_a_call_with_a_wrong_token_is_permission_denied(server: InProcessServer):
    assert summarize_code(server, "wrong-token") == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("token", TOKENS)
def test_a_call_with_an_accepted_token_is_served(server: InProcessServer, token: str):
    assert summarize_code(server, token) == grpc.StatusCode.OK


def test_the_refusal_tells_the_client_how_to_send_a_token(server: InProcessServer):
    with AttnserveClient(server.target) as client, pytest.raises(grpc.RpcError) as refused:
        client.list_models(timeout=CALL_TIMEOUT_S)

    assert "authorization: Bearer <token>" in refused.value.details()


def test_another_authorization_scheme_is_unauthenticated(channel: grpc.Channel):
    stub = kserve_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ServerLive(
            kserve_pb.ServerLiveRequest(),
            metadata=(("authorization", f"Basic {TOKENS[0]}"),),
            timeout=CALL_TIMEOUT_S,
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_stream_without_a_token_is_unauthenticated(server: InProcessServer):
    with AttnserveClient(server.target) as client, pytest.raises(grpc.RpcError) as refused:
        list(client.summarize_stream(TEXT, max_new_tokens=2, timeout=CALL_TIMEOUT_S))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_kserve_api_needs_the_token_too(channel: grpc.Channel):
    stub = kserve_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ServerLive(kserve_pb.ServerLiveRequest(), timeout=CALL_TIMEOUT_S)

    live = stub.ServerLive(
        kserve_pb.ServerLiveRequest(), metadata=bearer(TOKENS[0]), timeout=CALL_TIMEOUT_S
    )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert live.live


def test_a_kserve_stream_with_a_wrong_token_is_permission_denied(channel: grpc.Channel):
    stub = kserve_grpc.GRPCInferenceServiceStub(channel)
    responses = stub.ModelStreamInfer(
        iter([kserve_pb.ModelInferRequest(model_name="x")]),
        metadata=bearer("wrong-token"),
        timeout=CALL_TIMEOUT_S,
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(responses)

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_unknown_method_without_a_token_is_unauthenticated(channel: grpc.Channel):
    call = channel.unary_unary("/attnserve.v1.AttentionService/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as refused:
        call(b"", timeout=CALL_TIMEOUT_S)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_made_up_method_names_without_a_token_add_no_metric_series(
    server: InProcessServer, channel: grpc.Channel
):
    def series() -> int:
        return sum(len(family.samples) for family in server.metrics.registry.collect())

    call = channel.unary_unary("/attnserve.v1.AttentionService/Probe0")
    with pytest.raises(grpc.RpcError):
        call(b"", timeout=CALL_TIMEOUT_S)  # the one "other" series, created once
    before = series()
    for index in range(1, 300):
        call = channel.unary_unary(f"/attnserve.v{index}.Made{index}/Up{index}")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=CALL_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert series() == before


def test_health_needs_no_token_by_default(channel: grpc.Channel):
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_no_token_by_default(channel: grpc.Channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = stub.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT_S)

    names = {service.name for service in answer.list_services_response.service}
    assert "attnserve.v1.AttentionService" in names


def test_closed_health_needs_a_token(models_dir: Path, tokens_file: Path):
    security = SecuritySettings(auth_tokens_file=tokens_file, auth_open_health=False)
    with (
        serving(models_dir, load=False, server_overrides={"security": security}) as server,
        grpc.insecure_channel(server.target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_closed_reflection_needs_a_token(models_dir: Path, tokens_file: Path):
    security = SecuritySettings(auth_tokens_file=tokens_file, auth_open_reflection=False)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with (
        serving(models_dir, load=False, server_overrides={"security": security}) as server,
        grpc.insecure_channel(server.target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        list(stub.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT_S))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_tokens_file_skips_comments_and_blank_lines(tokens_file: Path):
    assert load_tokens(tokens_file) == list(TOKENS)


def test_a_tokens_file_without_tokens_is_a_settings_error(tmp_path: Path):
    empty = tmp_path / "tokens"
    empty.write_text("# nothing yet\n\n")

    with pytest.raises(SettingsError, match="holds no tokens"):
        load_tokens(empty)
