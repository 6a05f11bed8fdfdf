"""Per-token attribution from the engine against PyTorch's `output_attentions` on the checkpoint.

The reference is the checkpoint run teacher-forced on the tokens the engine returned
(decoder input = decoder_start + the answer minus its last token), with output_attentions=True:
its cross-attention at position t, reduced as the manifest says (mean over heads and the listed
layers), is the attention that chose token t. The engine's weights must equal it within 1e-4,
for a request alone, inside a busy continuous batch shared with requests that do not ask, and
for beam search (the returned beam's attention).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForSeq2SeqLM, VisionEncoderDecoderModel

from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams, GenerationResult
from service.runtime.model import LoadedModel

TEXTS = [
    "w1 w2 w3 w4",
    "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20",
    "w5 w40",
    "w30 w31 w32 w33 w34 w35",
]
TOLERANCE = 1e-4
EXPLAIN = GenerationParams(max_new_tokens=10, explain=True, explain_full=True)
EXPLAIN_BEAM = GenerationParams(
    max_new_tokens=10, num_beams=3, min_new_tokens=4, explain=True, explain_full=True
)
PLAIN = GenerationParams(max_new_tokens=12)
SAMPLED = GenerationParams(max_new_tokens=9, do_sample=True, top_k=20, seed=4)


@pytest.fixture(scope="module")
def served(text_model) -> ServedModel:
    return ServedModel(LoadedModel.load(text_model[1]), EngineConfig(max_batch_rows=8))


@pytest.fixture(scope="module")
def reference(text_model) -> AutoModelForSeq2SeqLM:
    return AutoModelForSeq2SeqLM.from_pretrained(text_model[0], attn_implementation="eager").eval()


def _reduced(cross_attentions: tuple[torch.Tensor, ...], layers: list[int]) -> np.ndarray:
    """[tokens, S]: mean over the listed layers and every head (batch of one)."""
    stacked = torch.stack([cross_attentions[layer][0] for layer in layers])  # [L, H, T, S]
    return stacked.mean(dim=(0, 1)).numpy()


def _teacher_forced(model, served: ServedModel, result: GenerationResult, **inputs) -> np.ndarray:
    start = served.manifest.special_tokens.decoder_start
    decoder_input = torch.tensor([[start, *result.token_ids[:-1]]])
    with torch.no_grad():
        out = model(**inputs, decoder_input_ids=decoder_input, output_attentions=True)
    assert served.manifest.cross_attention is not None
    return _reduced(out.cross_attentions, served.manifest.cross_attention.layers)


def _engine_weights(result: GenerationResult) -> np.ndarray:
    assert result.attribution is not None
    assert [t.token_id for t in result.attribution.tokens] == result.token_ids
    return np.array([token.weights for token in result.attribution.tokens])


def _check_text(served, reference, text: str, result: GenerationResult) -> None:
    ids = torch.from_numpy(served.model.tokenizer.encode(text)[None, :])
    expected = _teacher_forced(
        reference, served, result, input_ids=ids, attention_mask=torch.ones_like(ids)
    )
    np.testing.assert_allclose(_engine_weights(result), expected, atol=TOLERANCE)


def test_explained_tokens_equal_pytorch_output_attentions_alone(served, reference):
    for text in TEXTS:
        (result,) = run_to_completion(served, [text], [EXPLAIN])
        _check_text(served, reference, text, result)


def test_explained_tokens_equal_pytorch_in_a_batch_with_other_requests(served, reference):
    params = [EXPLAIN, PLAIN, SAMPLED, EXPLAIN, EXPLAIN_BEAM, PLAIN]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(params))]
    results = run_to_completion(served, texts, params)
    for text, request, result in zip(texts, params, results, strict=True):
        if request.explain:
            _check_text(served, reference, text, result)
        else:
            assert result.attribution is None


def test_beam_search_returns_the_attention_of_the_returned_beam(served, reference):
    for text in TEXTS[:2]:
        (result,) = run_to_completion(served, [text], [EXPLAIN_BEAM])
        _check_text(served, reference, text, result)


def test_explain_does_not_change_the_tokens(served):
    plain = run_to_completion(served, TEXTS, [PLAIN] * len(TEXTS))
    explained = run_to_completion(
        served, TEXTS, [GenerationParams(max_new_tokens=12, explain=True)] * len(TEXTS)
    )
    assert [r.token_ids for r in explained] == [r.token_ids for r in plain]


def test_top_spans_are_the_words_with_the_most_summed_weight(served):
    text = TEXTS[1]
    params = GenerationParams(max_new_tokens=6, explain=True, explain_top_k=3, explain_full=True)
    (result,) = run_to_completion(served, [text], [params])
    attribution = result.attribution
    assert attribution is not None
    for token in attribution.tokens:
        assert len(token.top_spans) == 3
        for span in token.top_spans:
            assert text[span.start : span.end] == span.text and span.text.strip() == span.text
        # Each word of this text is one token here: summed weights are the token weights.
        real = [
            (w, s) for w, s in zip(token.weights, attribution.source_tokens, strict=True) if s.text
        ]
        best = sorted(real, key=lambda pair: -pair[0])[:3]
        assert [s.text for _, s in best] == [s.text for s in token.top_spans]
        assert [span.weight for span in token.top_spans] == pytest.approx([w for w, _ in best])


def _images() -> list[bytes]:
    rng = np.random.default_rng(0)
    images = []
    for height in (30, 44):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


@pytest.mark.parametrize("params", [EXPLAIN, EXPLAIN_BEAM], ids=["greedy", "beam"])
def test_caption_patch_weights_equal_pytorch_output_attentions(captioner, params):
    served = ServedModel(LoadedModel.load(captioner[1]), EngineConfig())
    reference = VisionEncoderDecoderModel.from_pretrained(
        captioner[0], attn_implementation="eager"
    ).eval()
    spec = served.manifest.cross_attention
    assert spec is not None and spec.patch_grid is not None
    rows, cols = spec.patch_grid
    images = _images()
    results = run_to_completion(served, [*images, images[0]], [params, params, PLAIN])
    assert results[-1].attribution is None
    for image, result in zip(images, results[: len(images)], strict=True):
        pixels = served.prepare(None, image, params, lambda _: None).encoder_feeds["pixel_values"]
        expected = _teacher_forced(reference, served, result, pixel_values=torch.from_numpy(pixels))
        attribution = result.attribution
        assert attribution is not None
        assert (attribution.grid_rows, attribution.grid_cols) == (rows, cols)
        grid = spec.source_prefix + np.arange(rows * cols)
        np.testing.assert_allclose(_engine_weights(result), expected[:, grid], atol=TOLERANCE)
