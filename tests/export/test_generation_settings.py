"""What an export records about generation makes the served model generate what `generate()` does:
the defaults it uses, its length limits, and the settings of the export's own beam check."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoModelForSeq2SeqLM,
    GenerationConfig,
)

from export.artifacts import generation_defaults
from export.beam_parity import BEAM_NEW_TOKENS
from export.errors import ExportError
from export.exporter import export_model
from export.parity import until_eos
from service.engine.config import EngineConfig
from service.engine.sync_driver import generate_offline
from service.engine.types import GenerationParams
from service.engine.validation import resolve_params
from service.errors import InvalidArgument
from service.runtime.images import load_pixel_values
from service.runtime.manifest import MANIFEST_FILE, ImagePreprocessing, ModelManifest
from tests.fixtures.tiny_text_models import build_bart

TEXT = "w3 w17 w5 w40 w8 w22 w9"
# Where each checkpoint keeps its decoder's position table size (None: relative positions).
DECODER_POSITIONS = {
    "bart": lambda config: config.max_position_embeddings,
    "t5": lambda config: None,
    "vit-gpt2": lambda config: config.decoder.n_positions,
    "vit-bert": lambda config: config.decoder.max_position_embeddings,
    "blip": lambda config: config.text_config.max_position_embeddings,
}


def _png_and_pixel_values(prep: ImagePreprocessing) -> tuple[bytes, torch.Tensor]:
    """A random PNG image and the pixel_values the engine computes from its bytes."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(9).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    config = EngineConfig()
    values = load_pixel_values(
        buffer.getvalue(), prep, config.max_image_pixels, config.max_image_bytes
    )
    return buffer.getvalue(), torch.from_numpy(values)


def test_a_checkpoint_setting_no_length_gets_twenty_new_tokens():
    """generate() then makes 20 tokens after the decoder's starting tokens, whatever their count."""
    defaults = generation_defaults(GenerationConfig())
    for prompt_len in (1, 3):
        resolved = resolve_params(GenerationParams(), defaults, EngineConfig(), prompt_len)
        assert resolved.max_new_tokens == 20


def test_a_checkpoint_max_length_stays_a_total_length():
    defaults = generation_defaults(GenerationConfig(max_length=12))
    assert (defaults.max_length, defaults.max_new_tokens) == (12, None)


def test_one_token_bad_words_become_banned_tokens():
    """Marian bans its <pad> (the decoder start) this way."""
    defaults = generation_defaults(GenerationConfig(bad_words_ids=[[58100]]))
    assert defaults.banned_tokens() == [58100]


def test_a_multi_token_bad_word_is_refused_at_export():
    with pytest.raises(ExportError, match="only single-token entries"):
        generation_defaults(GenerationConfig(bad_words_ids=[[5], [6, 7]]))


@pytest.mark.parametrize("name", ["vit-gpt2", "vit-bert", "blip"])
def test_default_caption_equals_generate_with_the_checkpoints_defaults(name, checkpoints, exports):
    """BLIP's checkpoint sets max_length=12 at the top level, which its generate() ignores."""
    model = AutoModelForImageTextToText.from_pretrained(checkpoints[name]).eval()
    manifest = ModelManifest.load(exports[name])
    data, pixel_values = _png_and_pixel_values(manifest.image)
    [served] = generate_offline(exports[name], [data])
    with torch.no_grad():
        expected = model.generate(pixel_values=pixel_values)[0, 1:].tolist()
    assert served.token_ids == until_eos(expected, manifest.special_tokens.eos)


@pytest.mark.parametrize("name", ["bart", "pegasus", "t5"])
def test_default_summary_equals_generate_with_the_checkpoints_defaults(name, checkpoints, exports):
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoints[name]).eval()
    manifest = ModelManifest.load(exports[name])
    tokenizer = Tokenizer.from_file(str(exports[name] / "tokenizer.json"))
    [served] = generate_offline(exports[name], [TEXT])
    with torch.no_grad():
        expected = model.generate(torch.tensor([tokenizer.encode(TEXT).ids]))[0, 1:].tolist()
    assert served.token_ids == until_eos(expected, manifest.special_tokens.eos)


@pytest.mark.parametrize("name", sorted(DECODER_POSITIONS))
def test_manifest_records_the_decoder_position_limit(name, checkpoints, exports):
    expected = DECODER_POSITIONS[name](AutoConfig.from_pretrained(checkpoints[name]))
    assert ModelManifest.load(exports[name]).max_decoder_positions == expected


def test_request_beyond_the_decoder_positions_is_refused_naming_the_limit(exports):
    limit = ModelManifest.load(exports["bart"]).max_decoder_positions
    with pytest.raises(InvalidArgument, match=f"{limit} positions.*<= {limit - 1}"):
        generate_offline(exports["bart"], [TEXT], GenerationParams(max_new_tokens=limit))


def test_request_filling_the_decoder_positions_runs(exports):
    limit = ModelManifest.load(exports["bart"]).max_decoder_positions
    params = GenerationParams(max_new_tokens=limit - 1, min_new_tokens=limit - 1)
    [result] = generate_offline(exports["bart"], [TEXT], params)
    assert result.output_tokens == limit - 1


def test_manifest_written_before_the_position_limit_still_loads(exports, tmp_path):
    model_dir = shutil.copytree(exports["bart"], tmp_path / "old")
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    del data["max_decoder_positions"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data))
    assert ModelManifest.load(model_dir).max_decoder_positions is None


def test_beam_check_matches_generate_for_a_checkpoint_with_min_length(tmp_path):
    """min_length=56 (as bart-large-cnn) in the checkpoint; a strong </s> makes beams end
    early. Both sides of the beam check let them end: the engine's sequences stop before 56
    tokens, and generate()'s match them."""
    checkpoint = build_bart(tmp_path / "ckpt", generation={"min_length": 56}, eos_logit_bias=16.0)
    manifest = export_model(checkpoint, "summarization", tmp_path / "model", progress=print)
    assert manifest.generation.min_length == 56
    assert manifest.parity["beam_tokens_identical"], manifest.parity
    assert min(manifest.parity["beam_output_lengths"]) < BEAM_NEW_TOKENS
