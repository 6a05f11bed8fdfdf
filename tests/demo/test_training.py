"""Demo training is reproducible for a seed and feeds the model what the server will feed it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.demo import train_captioner, train_summarizer
from export.demo.tasks import render_shapes
from export.demo.training import TrainSettings

FEW_STEPS = TrainSettings(steps=3, batch_size=8, warmup_steps=1, log_every=3)
TRAINERS = {
    "summarizer": train_summarizer.train_summarizer,
    "captioner": train_captioner.train_captioner,
}


def _weights(trainer, seed: int) -> dict[str, torch.Tensor]:
    model, _, _ = trainer(seed, FEW_STEPS)
    return model.state_dict()


@pytest.mark.parametrize("name", TRAINERS)
def test_same_seed_gives_identical_weights(name: str) -> None:
    first, second = _weights(TRAINERS[name], 0), _weights(TRAINERS[name], 0)
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("name", TRAINERS)
def test_different_seeds_give_different_weights(name: str) -> None:
    first, second = _weights(TRAINERS[name], 0), _weights(TRAINERS[name], 1)
    assert not all(torch.equal(first[key], second[key]) for key in first)


def test_training_pixels_match_the_saved_image_processor() -> None:
    """The fast numpy preprocessing used in training equals what preprocessor_config.json
    describes, for 64x64 scenes and their 128x128 twins."""
    rng = np.random.default_rng(3)
    images = [render_shapes(rng, scale=scale)[0] for scale in (1, 2, 1, 2)]
    processor = train_captioner.build_image_processor()
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(train_captioner.pixel_values(images), expected)
