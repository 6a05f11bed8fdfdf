"""Message size caps: grpc refuses a message above the receive limit with RESOURCE_EXHAUSTED;
below it, an image above the image cap reaches the engine's check and gets INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving

IMAGE_CAP_BYTES = 64 << 10  # the message limit is then this plus 1 MiB
CALL_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[AttnserveClient]:
    with (
        serving(models_dir, max_image_bytes=IMAGE_CAP_BYTES) as server,
        AttnserveClient(server.target) as connected,
    ):
        yield connected


def test_a_message_above_the_limit_is_resource_exhausted(client: AttnserveClient):
    with pytest.raises(grpc.RpcError) as refused:
        client.summarize("w " * (1 << 20), timeout=CALL_TIMEOUT_S)  # 2 MiB of text

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_server_serves_on_after_refusing_a_large_message(client: AttnserveClient):
    with pytest.raises(grpc.RpcError):
        client.caption(bytes(2 << 20), timeout=CALL_TIMEOUT_S)

    assert client.summarize("w1 w2 w3", max_new_tokens=2, timeout=CALL_TIMEOUT_S).output_tokens


def test_an_image_above_the_image_cap_is_invalid_and_names_the_cap(client: AttnserveClient):
    with pytest.raises(grpc.RpcError) as refused:
        client.caption(bytes(IMAGE_CAP_BYTES + 1), timeout=CALL_TIMEOUT_S)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(IMAGE_CAP_BYTES) in refused.value.details()
