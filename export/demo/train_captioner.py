"""The demo captioner: a small VisionEncoderDecoder (ViT encoder, GPT-2 decoder with cross
attention) trained on synthetic shape scenes.

The model sees 64x64 inputs in 8x8 patches, so one patch is never bigger than a shape. Any image
is resized to 64x64 with PIL's bilinear filter, exactly as the exported preprocessor_config.json
tells the server to do; a quarter of the training scenes are drawn at 128x128 and resized, so
the 128x128 twin of a scene gets the same caption.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import (
    GPT2Config,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from export.demo.tasks import CANVAS, render_shapes
from export.demo.tokenizers import BOS, EOS, PAD, caption_tokenizer, special_id
from export.demo.training import (
    Batch,
    Check,
    TrainResult,
    TrainSettings,
    generated_exact_match,
    reference_labels,
    set_greedy_generation,
    train_from_seed,
)

IMAGE_SIZE = CANVAS
PATCH_SIZE = 8
PIXEL_MEAN = PIXEL_STD = (0.5, 0.5, 0.5)
TWIN_SHARE = 0.25  # fraction of training scenes drawn at 128x128 and resized
MAX_CAPTION_TOKENS = 12  # generation limit, decoder start included; captions have at most 9
SETTINGS = TrainSettings(max_steps=4000, first_check=600, decay_steps=1500, learning_rate=3e-3)


def build_image_processor() -> ViTImageProcessorPil:
    """The preprocessing saved with the checkpoint (preprocessor_config.json, type
    ViTImageProcessor; the PIL variant is the one that needs no torchvision)."""
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(PIXEL_MEAN),
        image_std=list(PIXEL_STD),
    )


def pixel_values(images: list[Image.Image]) -> torch.Tensor:
    """[B, 3, 64, 64] model inputs: the processor's steps (resize, rescale, normalise), done
    directly in numpy because the training loop calls it for every batch. A 64x64 RGB image
    needs no resize (PIL's resize to the same size is a copy); rescale and normalise are one
    multiply-add on the stacked batch."""
    resized = [
        image
        if image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
        else image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        for image in images
    ]
    pixels = np.stack([np.asarray(image) for image in resized]).transpose(0, 3, 1, 2)
    scaled = np.ascontiguousarray(pixels).astype(np.float32)
    scaled *= (1 / (255 * np.asarray(PIXEL_STD, dtype=np.float32)))[:, None, None]
    scaled -= (np.asarray(PIXEL_MEAN, dtype=np.float32) / np.float32(PIXEL_STD))[:, None, None]
    return torch.from_numpy(scaled)


def build_model(tokenizer: Tokenizer) -> VisionEncoderDecoderModel:
    """A randomly initialised ViT + GPT-2 sized for the task (call torch.manual_seed first)."""
    pad, bos, eos = (special_id(tokenizer, t) for t in (PAD, BOS, EOS))
    encoder = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    decoder = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=2 * MAX_CAPTION_TOKENS,
        n_embd=64,
        n_layer=3,  # two stay at chance on "left of" vs "above" within the step budget
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = bos, pad, eos
    model = VisionEncoderDecoderModel(config=config)
    _start_positions_as_2d_sincos(model.encoder.embeddings.position_embeddings)
    set_greedy_generation(
        model.generation_config, pad=pad, bos=bos, eos=eos, max_length=MAX_CAPTION_TOKENS
    )
    return model


def _sincos(positions: int, dim: int) -> torch.Tensor:
    """[positions, dim]: the Transformer's sine/cosine position table (base 10000)."""
    angles = torch.arange(positions, dtype=torch.float32)[:, None] / 10000 ** (
        torch.arange(0, dim, 2, dtype=torch.float32) / dim
    )
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(positions, dim)


@torch.no_grad()
def _start_positions_as_2d_sincos(position_embeddings: torch.nn.Parameter) -> None:
    """Start ViT's learned patch positions from the 2-D sine/cosine table of MAE (half the
    channels encode the row, half the column; the class token gets zeros). Randomly initialised
    positions say nothing about geometry, and the model never learned "left of" vs "above" from
    them in the step budget; from this start row and column are readable at once."""
    dim, grid = position_embeddings.shape[-1], IMAGE_SIZE // PATCH_SIZE
    axis = _sincos(grid, dim // 2)
    rows = axis[:, None, :].expand(grid, grid, -1)
    columns = axis[None, :, :].expand(grid, grid, -1)
    position_embeddings[0, 0] = 0.0
    position_embeddings[0, 1:] = torch.cat([rows, columns], dim=-1).reshape(grid * grid, dim)


def render_scenes(rng: np.random.Generator, size: int) -> tuple[list[Image.Image], list[str]]:
    """`size` fresh scenes, a TWIN_SHARE of them drawn at 128x128."""
    scenes = [render_shapes(rng, scale=2 if rng.random() < TWIN_SHARE else 1) for _ in range(size)]
    return [image for image, _ in scenes], [caption for _, caption in scenes]


def scene_batch(tokenizer: Tokenizer, rng: np.random.Generator, size: int) -> Batch:
    images, captions = render_scenes(rng, size)
    return {"pixel_values": pixel_values(images), "labels": reference_labels(tokenizer, captions)}


def check_batch(
    tokenizer: Tokenizer, rng: np.random.Generator, cases: int, scale: int = 1
) -> Batch:
    """`cases` fresh scenes drawn at `scale`, preprocessed by the checkpoint's own image
    processor, with their captions: the in-training check's fixed cases
    (training.teacher_forced_exact_match)."""
    scenes = [render_shapes(rng, scale=scale) for _ in range(cases)]
    images = [image for image, _ in scenes]
    pixels = build_image_processor()(images=images, return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels, "labels": reference_labels(tokenizer, [c for _, c in scenes])}


def train_captioner(
    seed: int, check: Check, target: float, settings: TrainSettings = SETTINGS
) -> tuple[VisionEncoderDecoderModel, Tokenizer, TrainResult]:
    """Train from `seed` until `check` reaches `target` (see training.train)."""
    return train_from_seed(
        seed,
        caption_tokenizer,
        build_model,
        lambda tokenizer, rng, size, step: scene_batch(tokenizer, rng, size),
        settings,
        check,
        target,
        label="captioner",
    )


def evaluate_captioner(
    model: VisionEncoderDecoderModel,
    tokenizer: Tokenizer,
    rng: np.random.Generator,
    cases: int,
    scale: int = 1,
) -> float:
    """Exact match of greedy `generate()` captions on `cases` fresh scenes drawn at `scale`,
    preprocessed by the checkpoint's own image processor."""
    processor = build_image_processor()
    scenes = [render_shapes(rng, scale=scale) for _ in range(cases)]
    return generated_exact_match(
        model,
        tokenizer,
        scenes,
        lambda images: {
            "pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]
        },
    )
