"""The summarization checkpoints of the matrix, exported and served over real gRPC, against the
checkpoint itself: transformers' tokenizer (AutoTokenizer, converted from the checkpoint's own
files) and `model.generate()` with the checkpoint's generation defaults.

Inputs mix accents, CJK and emoji, so byte-level BPE pieces end mid-character and SentencePiece
pieces carry their `▁`; sampled streams (seeded) wander over the whole vocabulary.
"""

from __future__ import annotations

import unicodedata

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from export.parity import until_eos
from service.client import AttnserveClient
from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.manifest import GenerationDefaults, ModelManifest
from service.runtime.model import LoadedModel
from service.runtime.tokenizer import REPLACEMENT_CHAR, TextTokenizer
from tests.matrix.conftest import (
    ExportedCheckpoint,
    assert_stream_joins_to_the_unary_answer,
    matrix_params,
)

pytestmark = pytest.mark.parametrize(
    "exported", matrix_params("summarization"), indirect=True, scope="module"
)

TEXTS = [
    "The café in Zürich serves crème brûlée; 東京は日本の首都です。 🙂🚀",
    "Prices rose by 5% in March, the statistics office reported on Friday.",
    "中文测试：今天天气很好，我们去公园散步。 Straße, Mädchen, Grüße 👍🏽",
]
SEEDS = (0, 1, 2)
SAMPLED = {"do_sample": True, "num_beams": 1, "max_new_tokens": 24, "top_k": 0}
CALL_S = 120.0


@pytest.fixture(scope="module")
def model(exported: ExportedCheckpoint) -> AutoModelForSeq2SeqLM:
    return AutoModelForSeq2SeqLM.from_pretrained(exported.checkpoint).eval()


def _generate(model, hf_tokenizer, text: str, num_beams: int | None) -> list[int]:
    """generate() with the checkpoint's own defaults but `num_beams` (None: its own too): the
    tokens after the decoder start, up to and including EOS."""
    input_ids = hf_tokenizer(text, return_tensors="pt").input_ids
    beams = {} if num_beams is None else {"num_beams": num_beams}
    with torch.no_grad():
        sequence = model.generate(input_ids, **beams)[0].tolist()
    eos = model.generation_config.eos_token_id
    return until_eos(sequence[1:], eos if isinstance(eos, list) else [eos])


def test_export_passes_the_parity_gate(manifest: ModelManifest):
    assert manifest.parity["passed"], manifest.parity
    assert manifest.parity["greedy_tokens_identical"]
    assert manifest.parity["beam_tokens_identical"]


def test_manifest_carries_the_generation_defaults_generate_applies(manifest: ModelManifest, model):
    config = model.generation_config
    defaults = GenerationDefaults()
    for name in (
        "num_beams",
        "length_penalty",
        "no_repeat_ngram_size",
        "min_length",
        "early_stopping",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "bad_words_ids",
    ):
        value = getattr(config, name)  # None: unset, generate() uses transformers' default
        expected = getattr(defaults, name) if value is None else value
        assert getattr(manifest.generation, name) == expected, name
    if config.max_length is not None and manifest.generation.max_new_tokens is None:
        assert manifest.generation.max_length == config.max_length
    special = manifest.special_tokens
    assert special.decoder_start == config.decoder_start_token_id
    assert special.pad == config.pad_token_id
    assert special.eos == [config.eos_token_id]


def test_served_tokenizer_encodes_as_the_checkpoints(
    exported: ExportedCheckpoint, manifest: ModelManifest, hf_tokenizer
):
    ours = TextTokenizer(exported.model_dir / manifest.tokenizer_file, manifest.max_input_tokens)
    for text in TEXTS:
        assert ours.encode(text).tolist() == hf_tokenizer(text).input_ids, text


@pytest.mark.parametrize("num_beams", [None, 1, 4], ids=["defaults", "greedy", "beam4"])
def test_served_tokens_and_text_equal_generate(
    exported: ExportedCheckpoint,
    client: AttnserveClient,
    model,
    hf_tokenizer,
    num_beams: int | None,
):
    """A request that sets nothing (or only num_beams) gets generate()'s answer under the
    checkpoint's defaults: its beams, length penalty, n-gram ban, lengths, forced tokens."""
    beams = {} if num_beams is None else {"num_beams": num_beams}
    for text in TEXTS:
        expected = _generate(model, hf_tokenizer, text, num_beams)
        response = client.summarize(text, model=exported.spec.name, timeout=CALL_S, **beams)
        assert list(response.token_ids) == expected, text
        assert response.text == hf_tokenizer.decode(expected, skip_special_tokens=True), text


def test_greedy_tokens_with_the_argmax_beside_the_logits_equal_generate(
    exported: ExportedCheckpoint, model, hf_tokenizer
):
    """The device-argmax path (forced on here, on the CPU) applies the same bans (min length,
    Marian's banned <pad>) as the host's logits processors."""
    served = ServedModel(
        LoadedModel.load(exported.model_dir), EngineConfig(device_argmax="on", intra_op_threads=1)
    )
    results = run_to_completion(served, TEXTS, [GenerationParams(num_beams=1)] * len(TEXTS))
    for text, result in zip(TEXTS, results, strict=True):
        assert result.token_ids == _generate(model, hf_tokenizer, text, 1), text


def test_stream_deltas_concatenate_to_the_unary_text(
    exported: ExportedCheckpoint, client: AttnserveClient, hf_tokenizer
):
    generated: list[int] = []
    for text in TEXTS:
        for seed in SEEDS:
            params = SAMPLED | {"seed": seed}
            unary = client.summarize(text, model=exported.spec.name, timeout=CALL_S, **params)
            chunks = list(
                client.summarize_stream(text, model=exported.spec.name, timeout=CALL_S, **params)
            )
            assert_stream_joins_to_the_unary_answer(unary, chunks, hf_tokenizer)
            generated += unary.token_ids
    _assert_the_streams_met_the_tokenizers_hard_cases(exported, hf_tokenizer, generated)


def _assert_the_streams_met_the_tokenizers_hard_cases(
    exported: ExportedCheckpoint, hf_tokenizer, generated: list[int]
) -> None:
    """The streams above checked something: pieces ending mid-character (byte-level BPE) or
    `▁` word starts (SentencePiece) were generated, and multi-byte characters came out."""
    text = hf_tokenizer.decode(generated, skip_special_tokens=True)
    assert any(ord(char) > 0x7F for char in text.replace(REPLACEMENT_CHAR, ""))
    if exported.spec.tokenizer.startswith("byte-level"):
        assert any(REPLACEMENT_CHAR in hf_tokenizer.decode([token]) for token in generated)
    else:
        pieces = hf_tokenizer.convert_ids_to_tokens(generated)
        assert any(piece and piece.startswith("▁") for piece in pieces)


def test_attribution_names_each_tokens_text_and_its_source_span(
    exported: ExportedCheckpoint, client: AttnserveClient, hf_tokenizer
):
    for text in TEXTS:
        response = client.summarize(
            text,
            model=exported.spec.name,
            num_beams=1,
            max_new_tokens=8,
            explain=True,
            explain_full=True,
            explain_top_k=3,
            timeout=CALL_S,
        )
        attribution = response.attribution
        source = [(span.start, span.end, span.text) for span in attribution.source_tokens]
        assert source == _expected_source_spans(hf_tokenizer, text), text
        for token in attribution.tokens:
            assert token.token_text == hf_tokenizer.decode([token.token_id])
            for span in token.top_spans:
                assert span.text == text[span.start : span.end] and span.text.strip() == span.text


def _expected_source_spans(hf_tokenizer, text: str) -> list[tuple[int, int, str]]:
    """Each input token's span in the text as the checkpoint's tokenizer places it (surrounding
    whitespace trimmed; special tokens empty). A slow tokenizer (Marian) has no offsets: each
    piece is found in the text in order instead, a bare `▁` on the character after it (as the
    fast SentencePiece tokenizers place it)."""
    encoding = hf_tokenizer(text, return_special_tokens_mask=True)
    specials = encoding["special_tokens_mask"]
    if hf_tokenizer.is_fast:
        offsets = hf_tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    else:
        offsets = _piece_offsets(hf_tokenizer, text, encoding.input_ids, specials)
    spans = []
    for (start, end), special in zip(offsets, specials, strict=True):
        if special:
            spans.append((0, 0, ""))
            continue
        piece = text[start:end]
        start += len(piece) - len(piece.lstrip())
        end = max(start, end - (len(piece) - len(piece.rstrip())))
        spans.append((start, end, text[start:end]))
    return spans


def _piece_offsets(hf_tokenizer, text: str, ids: list[int], specials: list[int]) -> list:
    """Pieces are NFKC-normalized (fullwidth "：" is ":"): look for them in the normalized
    text, which here has the same length."""
    normalized = unicodedata.normalize("NFKC", text)
    assert len(normalized) == len(text)
    offsets, cursor = [], 0
    for token, special in zip(hf_tokenizer.convert_ids_to_tokens(ids), specials, strict=True):
        piece = token.replace("▁", " ").strip()
        if special:
            offsets.append((0, 0))
            continue
        if not piece:
            start = len(text[:cursor]) + len(text[cursor:]) - len(text[cursor:].lstrip())
            offsets.append((start, start + 1))
            continue
        start = normalized.index(piece, cursor)
        offsets.append((start, start + len(piece)))
        cursor = start + len(piece)
    return offsets
