"""The captioning checkpoints of the matrix (ViT+GPT-2, BLIP), exported and served over real
gRPC, against `model.generate()` with the checkpoint's defaults and its own tokenizer's decode.
Images are random pixels sent as PNG; generate() gets the pixel_values the server computes from
the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from export.parity import until_eos
from service.client import AttnserveClient
from service.engine.config import EngineConfig
from service.runtime.images import load_pixel_values
from service.runtime.manifest import ModelManifest
from service.runtime.tokenizer import REPLACEMENT_CHAR
from tests.matrix.conftest import (
    ExportedCheckpoint,
    assert_stream_joins_to_the_unary_answer,
    matrix_params,
)

pytestmark = pytest.mark.parametrize(
    "exported", matrix_params("captioning"), indirect=True, scope="module"
)

SEEDS = (0, 1, 2, 3)
SAMPLED = {"do_sample": True, "num_beams": 1, "max_new_tokens": 24, "top_k": 0}
CALL_S = 120.0


@pytest.fixture(scope="module")
def model(exported: ExportedCheckpoint):
    return AutoModelForImageTextToText.from_pretrained(exported.checkpoint).eval()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(7)
    encoded = []
    for height, width in ((40, 40), (31, 57), (64, 20)):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def _generate(model, manifest: ModelManifest, image: bytes, num_beams: int | None) -> list[int]:
    """generate() with the checkpoint's defaults but `num_beams` (None: its own too), on the
    server's pixels; the tokens after the decoder prompt, up to and including EOS."""
    assert manifest.image is not None
    config = EngineConfig()
    pixels = load_pixel_values(
        image, manifest.image, config.max_image_pixels, config.max_image_bytes
    )
    with torch.no_grad():
        beams = {} if num_beams is None else {"num_beams": num_beams}
        sequence = model.generate(pixel_values=torch.from_numpy(pixels), **beams)
    prompt = 1 + len(manifest.decoder_prompt)
    return until_eos(sequence[0, prompt:].tolist(), manifest.special_tokens.eos)


def test_export_passes_the_parity_gate(manifest: ModelManifest):
    assert manifest.parity["passed"], manifest.parity
    assert manifest.parity["greedy_tokens_identical"]
    assert manifest.parity["beam_tokens_identical"]


@pytest.mark.parametrize("num_beams", [None, 1, 4], ids=["defaults", "greedy", "beam4"])
def test_served_tokens_and_text_equal_generate(
    exported: ExportedCheckpoint,
    client: AttnserveClient,
    model,
    manifest: ModelManifest,
    hf_tokenizer,
    images: list[bytes],
    num_beams: int | None,
):
    beams = {} if num_beams is None else {"num_beams": num_beams}
    for image in images:
        expected = _generate(model, manifest, image, num_beams)
        response = client.caption(image, model=exported.spec.name, timeout=CALL_S, **beams)
        assert list(response.token_ids) == expected
        assert response.text == hf_tokenizer.decode(expected, skip_special_tokens=True)


def test_stream_deltas_concatenate_to_the_unary_text(
    exported: ExportedCheckpoint, client: AttnserveClient, hf_tokenizer, images: list[bytes]
):
    generated: list[int] = []
    for image in images:
        for seed in SEEDS:
            params = SAMPLED | {"seed": seed}
            unary = client.caption(image, model=exported.spec.name, timeout=CALL_S, **params)
            chunks = list(
                client.caption_stream(image, model=exported.spec.name, timeout=CALL_S, **params)
            )
            assert_stream_joins_to_the_unary_answer(unary, chunks, hf_tokenizer)
            generated += unary.token_ids
    text = hf_tokenizer.decode(generated, skip_special_tokens=True)
    assert any(ord(char) > 0x7F for char in text.replace(REPLACEMENT_CHAR, ""))
    if exported.spec.tokenizer.startswith("byte-level"):  # pieces that end mid-character
        assert any(REPLACEMENT_CHAR in hf_tokenizer.decode([token]) for token in generated)
    else:  # WordPiece: continuation pieces glued to the previous word
        pieces = hf_tokenizer.convert_ids_to_tokens(generated)
        assert any(piece.startswith("##") for piece in pieces)


def test_explain_returns_one_patch_heatmap_per_token(
    exported: ExportedCheckpoint,
    client: AttnserveClient,
    manifest: ModelManifest,
    hf_tokenizer,
    images,
):
    response = client.caption(
        images[0], model=exported.spec.name, num_beams=1, explain=True, timeout=CALL_S
    )
    attribution = response.attribution
    assert manifest.cross_attention is not None
    rows, cols = manifest.cross_attention.patch_grid or (0, 0)
    assert (attribution.grid_rows, attribution.grid_cols) == (rows, cols)
    assert [t.token_id for t in attribution.tokens] == list(response.token_ids)
    for token in attribution.tokens:
        assert len(token.weights) == rows * cols
        assert token.token_text == hf_tokenizer.decode([token.token_id])
