"""The captioning families' export wrappers and graphs against the transformers model itself.

Every reference comes from transformers: the model's own forward pass and cache (logits, cross
and self-attention K/V) and `generate()` (tokens). Each family is checked on a tiny random
checkpoint: ViT + GPT-2 and ViT + BERT (both with enc_to_dec_proj), and BLIP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, BlipForConditionalGeneration, VisionEncoderDecoderModel

from export.errors import ExportError
from export.families.blip import BlipFamily
from export.families.image_captioning import ImageCaptioningFamily, read_image_preprocessing
from export.families.vision_encoder_decoder import VisionEncoderDecoderFamily
from export.onnx_export import decoder_spec
from service.runtime.images import pixel_values
from service.runtime.manifest import ModelManifest

TOLERANCE = 1e-4
ENCODER_PADDING = 3  # noise columns appended to every row's encoder K/V, masked out


@dataclass
class Captioner:
    name: str
    family: ImageCaptioningFamily
    model: torch.nn.Module
    model_dir: Path
    pixel_values: torch.Tensor  # three images

    def reference(self, row: int, tokens: list[int]):
        """transformers' own logits [n, V] and cache for one image and decoder sequence."""
        pixels = self.pixel_values[row : row + 1]
        ids = torch.tensor([tokens])
        with torch.no_grad():
            if self.name == "blip":
                states = self.model.vision_model(pixel_values=pixels).last_hidden_state
                out = self.model.text_decoder(
                    input_ids=ids, encoder_hidden_states=states, use_cache=True
                )
            else:
                out = self.model(pixel_values=pixels, decoder_input_ids=ids, use_cache=True)
        return out.logits[0].numpy(), out.cache


CAPTIONERS = {
    "vit-gpt2": (VisionEncoderDecoderModel, VisionEncoderDecoderFamily),
    "vit-bert": (VisionEncoderDecoderModel, VisionEncoderDecoderFamily),
    "blip": (BlipForConditionalGeneration, BlipFamily),
}


@pytest.fixture(scope="module", params=sorted(CAPTIONERS))
def captioner(request, checkpoints) -> Captioner:
    model_class, family_class = CAPTIONERS[request.param]
    model_dir = checkpoints[request.param]
    model = model_class.from_pretrained(model_dir, attn_implementation="eager").eval()
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    return Captioner(request.param, family_class(), model, model_dir, pixel_values)


@pytest.fixture(scope="module")
def exported(captioner, exports) -> Path:
    """The captioner through `export_model`, the path `attnserve export` takes."""
    return exports[captioner.name]


@pytest.fixture(scope="module")
def onnx_sessions(exported):
    manifest = ModelManifest.load(exported)
    return tuple(
        ort.InferenceSession(str(exported / spec.file))
        for spec in (manifest.encoder, manifest.decoder)
    )


def _decoder_input_names(captioner: Captioner) -> list[str]:
    return decoder_spec(captioner.family.dims(captioner.model).num_layers).inputs


def _run_encoder_wrapper(captioner: Captioner) -> list[np.ndarray]:
    wrapper = captioner.family.encoder_wrapper(captioner.model)
    with torch.no_grad():
        return [t.numpy() for t in wrapper(captioner.pixel_values)]


def _run_decoder_wrapper(captioner: Captioner):
    wrapper = captioner.family.decoder_wrapper(captioner.model)

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in wrapper(*(torch.from_numpy(v) for v in inputs.values()))]

    return run


def _self_cache(cache, row: int = 0) -> list[np.ndarray]:
    flat = []
    for layer in cache.self_attention_cache.layers:
        flat += [layer.keys[row].numpy(), layer.values[row].numpy()]
    return flat


# Per row: (image, decoder tokens after decoder_start, past length). The new tokens are the two
# after the past, so causality among new tokens is exercised too.
ROWS = [(0, [5, 9, 11, 7], 3), (1, [8], 0), (2, [6, 6, 20, 3, 12, 30], 5)]
NEW_TOKENS = 2


def _mixed_batch(captioner: Captioner, encoder_outputs: list[np.ndarray]):
    """Decoder inputs for ROWS in one call (left-padded pasts, right-padded encoder K/V, noise
    in every padded slot) and, per row, transformers' logits and presents for that row alone."""
    rng = np.random.default_rng(0)
    start = captioner.family.special_tokens(captioner.model).decoder_start
    dims = captioner.family.dims(captioner.model)
    cross = encoder_outputs[1:]
    max_past = max(past for _, _, past in ROWS)
    enc_len = cross[0].shape[2]
    batch: dict[str, list[np.ndarray]] = {name: [] for name in _decoder_input_names(captioner)}
    expected = []
    for image, tail, past in ROWS:
        tokens = [start, *tail]
        logits, cache = captioner.reference(image, tokens[: past + NEW_TOKENS])
        expected.append((logits[past:], _self_cache(cache)))
        pad = max_past - past
        batch["input_ids"].append(np.array(tokens[past : past + NEW_TOKENS]))
        batch["position_ids"].append(np.arange(past, past + NEW_TOKENS))
        batch["self_attention_mask"].append(np.r_[np.zeros(pad), np.ones(past + NEW_TOKENS)])
        batch["encoder_attention_mask"].append(np.r_[np.ones(enc_len), np.zeros(ENCODER_PADDING)])
        past_kv = _self_cache(captioner.reference(image, tokens[:past])[1]) if past else None
        for i in range(dims.num_layers):
            for j, kind in enumerate(("key", "value")):
                noise = rng.normal(size=(dims.num_heads, pad, dims.head_dim))
                real = past_kv[2 * i + j] if past_kv else noise[:, :0]
                batch[f"past_{kind}_{i}"].append(np.concatenate([noise, real], axis=1))
                padding = rng.normal(size=(dims.num_heads, ENCODER_PADDING, dims.head_dim))
                real_cross = cross[2 * i + j][image]
                batch[f"cross_{kind}_{i}"].append(np.concatenate([real_cross, padding], axis=1))
    inputs = {
        name: np.stack(rows).astype(np.int64 if "ids" in name or "mask" in name else np.float32)
        for name, rows in batch.items()
    }
    return inputs, expected


def _assert_rows_match_alone(outputs: list[np.ndarray], expected) -> None:
    max_past = max(past for _, _, past in ROWS)
    for row, ((_, _, past), (logits, presents)) in enumerate(zip(ROWS, expected, strict=True)):
        np.testing.assert_allclose(outputs[0][row], logits, rtol=0, atol=TOLERANCE)
        for got, want in zip(outputs[1:-1], presents, strict=True):  # last: cross_attention
            np.testing.assert_allclose(got[row][:, max_past - past :], want, rtol=0, atol=1e-5)


def test_encoder_cross_key_values_are_the_models_own(captioner):
    outputs = _run_encoder_wrapper(captioner)
    dims = captioner.family.dims(captioner.model)
    assert len(outputs) == 1 + 2 * dims.num_layers
    assert outputs[0].shape[1] == captioner.family.max_input_tokens(captioner.model)
    for row in range(len(captioner.pixel_values)):
        _, cache = captioner.reference(row, [1])
        for i, layer in enumerate(cache.cross_attention_cache.layers):
            np.testing.assert_allclose(outputs[1 + 2 * i][row], layer.keys[0], atol=1e-5)
            np.testing.assert_allclose(outputs[2 + 2 * i][row], layer.values[0], atol=1e-5)


def test_image_preprocessing_reproduces_the_checkpoints_image_processor(captioner):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    processor = AutoImageProcessor.from_pretrained(captioner.model_dir)
    expected = processor(image, return_tensors="np").pixel_values
    settings = captioner.family.image_preprocessing(str(captioner.model_dir))
    np.testing.assert_allclose(pixel_values(image, settings), expected, rtol=0, atol=1e-6)


def test_image_preprocessing_reads_a_legacy_feature_extractor_file(tmp_path):
    """The form nlpconnect/vit-gpt2-image-captioning ships: a square int size, no rescale keys."""
    legacy = {
        "feature_extractor_type": "ViTFeatureExtractor",
        "do_resize": True,
        "size": 224,
        "resample": 2,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    settings = read_image_preprocessing(str(tmp_path))
    assert (settings.height, settings.width, settings.resample) == (224, 224, "bilinear")
    assert settings.rescale_factor == pytest.approx(1 / 255)
    assert settings.mean == settings.std == [0.5, 0.5, 0.5]


def test_decoder_wrapper_rows_with_mixed_past_lengths_match_each_row_alone(captioner):
    inputs, expected = _mixed_batch(captioner, _run_encoder_wrapper(captioner))
    _assert_rows_match_alone(_run_decoder_wrapper(captioner)(inputs), expected)


def test_export_writes_a_manifest_describing_the_captioner(captioner, exported):
    manifest = ModelManifest.load(exported)
    family, model = captioner.family, captioner.model
    assert (manifest.task, manifest.architecture) == ("captioning", family.architecture)
    assert manifest.dims == family.dims(model)
    assert manifest.special_tokens == family.special_tokens(model)
    assert manifest.max_input_tokens == family.max_input_tokens(model)
    assert manifest.image == family.image_preprocessing(str(captioner.model_dir))
    assert manifest.parity["passed"], manifest.parity
    assert (exported / "preprocessor_config.json").is_file()


def test_export_checks_the_engines_beam_search_on_encoded_images(exported):
    parity = ModelManifest.load(exported).parity
    assert parity["beam_num_beams"] == 4
    assert parity["beam_tokens_identical"], parity


def test_onnx_encoder_matches_the_wrapper(captioner, onnx_sessions):
    encoder, _ = onnx_sessions
    got = encoder.run(None, {"pixel_values": captioner.pixel_values.numpy()})
    for onnx_out, torch_out in zip(got, _run_encoder_wrapper(captioner), strict=True):
        np.testing.assert_allclose(onnx_out, torch_out, rtol=0, atol=1e-5)


def test_onnx_decoder_rows_with_mixed_past_lengths_match_each_row_alone(captioner, onnx_sessions):
    encoder, decoder = onnx_sessions
    encoder_outputs = encoder.run(None, {"pixel_values": captioner.pixel_values.numpy()})
    inputs, expected = _mixed_batch(captioner, encoder_outputs)
    _assert_rows_match_alone(decoder.run(None, inputs), expected)


def test_onnx_greedy_decoding_gives_the_tokens_of_generate(captioner, onnx_sessions):
    encoder, decoder = onnx_sessions
    tokens = captioner.family.special_tokens(captioner.model)
    with torch.no_grad():
        generated = captioner.model.generate(captioner.pixel_values).numpy()
    cross = encoder.run(None, {"pixel_values": captioner.pixel_values.numpy()})[1:]
    batch, enc_len = cross[0].shape[0], cross[0].shape[2]
    dims = captioner.family.dims(captioner.model)
    sequences = np.full((batch, 1), tokens.decoder_start, dtype=np.int64)
    past = [np.zeros((batch, dims.num_heads, 0, dims.head_dim), np.float32)] * len(cross)
    for step in range(generated.shape[1] - 1):
        inputs = [
            sequences[:, -1:],
            np.full((batch, 1), step, np.int64),
            np.ones((batch, step + 1), np.int64),
            np.ones((batch, enc_len), np.int64),
            *past,
            *cross,
        ]
        feeds = dict(zip(_decoder_input_names(captioner), inputs, strict=True))
        logits, *past, _cross_attention = decoder.run(None, feeds)
        sequences = np.concatenate([sequences, logits[:, -1].argmax(-1)[:, None]], axis=1)
    for ours, theirs in zip(sequences, generated, strict=True):
        assert _until_eos(ours, tokens.eos) == _until_eos(theirs, tokens.eos)


def _until_eos(sequence: np.ndarray, eos: list[int]) -> list[int]:
    out = []
    for token in sequence.tolist():
        out.append(token)
        if token in eos and len(out) > 1:
            break
    return out


@pytest.mark.parametrize(
    "content",
    ['{"image_processor_type": "ViTImageProcessor", "size": "big"}', "garbage{{"],
    ids=["wrong-type", "not-json"],
)
def test_an_image_processor_file_that_cannot_be_read_is_an_export_error(tmp_path, content: str):
    """It was a traceback (transformers' ValueError) instead of one error line."""
    (tmp_path / "preprocessor_config.json").write_text(content)
    with pytest.raises(ExportError, match="its image processor .* cannot be read"):
        read_image_preprocessing(str(tmp_path))
