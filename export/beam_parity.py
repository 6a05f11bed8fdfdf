"""Beam search (num_beams=4) of the exported model, run by the serving engine itself, against
`model.generate()` on the same inputs.

The engine is what serves the model, so this checks the graphs and the engine's beam search
together, exactly as requests will run: texts are tokenized by the engine, images arrive as PNG
bytes and are decoded and normalised by the engine, and generate() gets the very same input_ids
or pixel_values (computed with the engine's own image functions).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from export.artifacts import TOKENIZER_FILE
from export.families.base import ExportFamily
from export.parity import until_eos
from service.engine.config import EngineConfig
from service.engine.sync_driver import generate_offline
from service.engine.types import GenerationParams
from service.runtime.images import load_pixel_values
from service.runtime.manifest import ImagePreprocessing, ModelManifest, SpecialTokens
from service.runtime.tasks import Task

NUM_BEAMS = 4
BEAM_NEW_TOKENS = 10
# What both sides run with; the names mean the same in GenerationParams and GenerationConfig.
# Penalties that requests can set are neutral. min_new_tokens=0 overrides a checkpoint's
# min_length on both sides (generate() then counts it from its prompt, as the engine does):
# bart-large-cnn's 56 would outlast the 10 tokens and leave EOS handling unchecked. The
# checkpoint's forced tokens and early stopping still apply to both.
BEAM_SETTINGS: dict[str, Any] = {
    "max_new_tokens": BEAM_NEW_TOKENS,
    "min_new_tokens": 0,
    "num_beams": NUM_BEAMS,
    "do_sample": False,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
}
_TEXT_TOKENS = (11, 5, 8)
_IMAGE_SIZES = ((45, 61), (32, 32), (80, 24))  # (height, width): the engine resizes each


@dataclass
class _Sample:
    served: str | bytes  # what a request carries: text, or encoded image bytes
    model_inputs: dict[str, torch.Tensor]  # the same input as generate() takes it


def check_beam(
    family: ExportFamily, model: Any, model_dir: Path, manifest: ModelManifest
) -> dict[str, Any]:
    """Per input: the engine's beam tokens equal generate()'s."""
    engine_config = EngineConfig()
    if manifest.task == Task.CAPTIONING:
        assert manifest.image is not None  # the manifest guarantees it for captioning
        samples = _image_samples(manifest.image, engine_config)
    else:
        samples = _text_samples(model_dir, manifest.special_tokens)
    served = generate_offline(
        model_dir, [s.served for s in samples], GenerationParams(**BEAM_SETTINGS), engine_config
    )
    config = copy.deepcopy(family.generation_config(model))
    config.update(**BEAM_SETTINGS)
    prompt_len = 1 + len(manifest.decoder_prompt)
    eos = manifest.special_tokens.eos
    mismatched = []
    for row, (sample, result) in enumerate(zip(samples, served, strict=True)):
        with torch.no_grad():
            sequence = model.generate(**sample.model_inputs, generation_config=config)
        if result.token_ids != until_eos(sequence[0, prompt_len:].tolist(), eos):
            mismatched.append(row)
    return {
        "beam_num_beams": NUM_BEAMS,
        "beam_new_tokens": BEAM_NEW_TOKENS,
        "beam_tokens_identical": not mismatched,
        "beam_mismatched_rows": mismatched,
        "beam_output_lengths": [len(result.token_ids) for result in served],
    }


def _text_samples(model_dir: Path, special: SpecialTokens) -> list[_Sample]:
    """Texts decoded from random ordinary token ids (fixed seed), with the ids the engine's
    tokenizer gives them."""
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    rng = np.random.default_rng(2)
    specials = {special.pad, special.decoder_start, *special.eos}
    ordinary = [i for i in range(tokenizer.get_vocab_size()) if i not in specials]
    texts = [tokenizer.decode(rng.choice(ordinary, n).tolist()) for n in _TEXT_TOKENS]
    return [
        _Sample(text, {"input_ids": torch.tensor([tokenizer.encode(text).ids])}) for text in texts
    ]


def _image_samples(prep: ImagePreprocessing, engine_config: EngineConfig) -> list[_Sample]:
    """Random RGB images of several sizes as PNG (lossless, so decoding gives the same pixels),
    with the pixel_values the engine computes from those bytes."""
    rng = np.random.default_rng(2)
    samples = []
    for height, width in _IMAGE_SIZES:
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
        values = load_pixel_values(
            data, prep, engine_config.max_image_pixels, engine_config.max_image_bytes
        )
        samples.append(_Sample(data, {"pixel_values": torch.from_numpy(values)}))
    return samples
