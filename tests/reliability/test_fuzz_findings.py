"""The requests fuzzing found answered INTERNAL, now each answered as it should be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import TEXT

LONG_ANSWER = 200  # tokens: long enough for length ** length_penalty to leave float32's range


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[AttnserveClient]:
    with serving(models_dir, max_num_beams=2) as server, AttnserveClient(server.target) as opened:
        yield opened


def invalid_argument_details(client: AttnserveClient, **params: object) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        client.summarize(TEXT, max_new_tokens=8, timeout=30, **params)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value.details()


def test_a_huge_length_penalty_is_invalid(client: AttnserveClient):
    details = invalid_argument_details(client, num_beams=2, length_penalty=342.0)

    assert "length_penalty must be between -10 and 10" in details


def test_a_temperature_too_small_for_float32_is_invalid_when_sampling(client: AttnserveClient):
    details = invalid_argument_details(client, do_sample=True, temperature=1e-300)

    assert "temperature must be > 0 (at least 0.0001) when sampling" in details


def test_a_parameter_beyond_float32_is_invalid(client: AttnserveClient):
    details = invalid_argument_details(client, repetition_penalty=1e300)

    assert "repetition_penalty must be a finite number (float32)" in details


def test_a_negative_length_penalty_on_a_long_beam_answer_is_served(client: AttnserveClient):
    answer = client.summarize(
        TEXT,
        num_beams=2,
        length_penalty=-5.0,
        max_new_tokens=LONG_ANSWER,
        min_new_tokens=LONG_ANSWER,
        timeout=60,
    )

    assert answer.output_tokens == LONG_ANSWER
