"""Demo training is reproducible for a seed, trains until its held-out check reaches the target
(and no further), fails loudly at its ceiling, and feeds the model what the server will feed it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from export.demo import train_captioner, train_summarizer
from export.demo.demo_models import DEMO_MODELS
from export.demo.tasks import render_shapes
from export.demo.training import (
    Check,
    TrainSettings,
    learning_rate_factor,
    pad_right,
    teacher_forced_exact_match,
)
from export.errors import ExportError

FEW_STEPS = TrainSettings(
    max_steps=3, check_every=3, first_check=3, batch_size=8, warmup_steps=1, log_every=3
)
CHECK_CASES = 4
TRAINERS = {
    "summarizer": (train_summarizer.train_summarizer, "demo-summarizer"),
    "captioner": (train_captioner.train_captioner, "demo-captioner"),
}


def _train(name: str, seed: int, settings: TrainSettings = FEW_STEPS, target: float = 0.0):
    """Train demo model `name` with its real held-out check on a few cases."""
    trainer, model_name = TRAINERS[name]
    check = DEMO_MODELS[model_name].check(seed, CHECK_CASES, CHECK_CASES)
    return trainer(seed, check, target, settings)


def _weights(name: str, seed: int) -> dict[str, torch.Tensor]:
    model, _, _ = _train(name, seed)
    return model.state_dict()


@pytest.mark.parametrize("name", TRAINERS)
def test_same_seed_gives_identical_weights(name: str) -> None:
    first, second = _weights(name, 0), _weights(name, 0)
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("name", TRAINERS)
def test_different_seeds_give_different_weights(name: str) -> None:
    first, second = _weights(name, 0), _weights(name, 1)
    assert not all(torch.equal(first[key], second[key]) for key in first)


def test_training_stops_at_the_first_check_that_reaches_the_target() -> None:
    settings = dataclasses.replace(FEW_STEPS, max_steps=8, check_every=2, first_check=4)
    _, _, result = _train("summarizer", 0, settings, target=0.0)
    assert result.steps == 4
    assert [check["step"] for check in result.checks] == [4]
    assert set(result.checks[0]["exact_match"]) == {"reports"}
    assert set(result.checks[0]["confirmed_exact_match"]) == {"reports"}


def test_a_screen_that_passes_is_not_enough_without_its_confirmation() -> None:
    """Every screen passes (target 0) but no confirmation does: training goes on to the ceiling
    and the error names both figures of every check."""
    settings = dataclasses.replace(FEW_STEPS, max_steps=6, check_every=2, first_check=4)
    screen = DEMO_MODELS["demo-summarizer"].check(0, CHECK_CASES).screen
    never_confirmed = Check(screen=screen, confirm=lambda model, tokenizer: {"reports": -1.0})
    with pytest.raises(ExportError) as failure:
        train_summarizer.train_summarizer(0, never_confirmed, 0.0, settings)
    message = str(failure.value)
    for step in (4, 6):
        assert f"step {step}: reports " in message
    assert message.count("(confirmation reports -100.0%)") == 2


@pytest.mark.parametrize(("screened", "stops"), [(0.96, True), (0.94, False)])
def test_a_screen_within_its_slack_runs_the_confirmation_which_decides(
    screened: float, stops: bool
) -> None:
    """Target 0.99, slack 0.04: a screen at 0.96 runs the confirmation (1.0) and training stops
    at the first check; a screen at 0.94 never does, up to the ceiling."""
    settings = dataclasses.replace(FEW_STEPS, max_steps=6, check_every=2, first_check=4)
    check = Check(
        screen=lambda model, tokenizer: {"reports": screened},
        confirm=lambda model, tokenizer: {"reports": 1.0},
        screen_slack=0.04,
    )
    if stops:
        _, _, result = train_summarizer.train_summarizer(0, check, 0.99, settings)
        assert result.steps == 4 and result.checks[0]["confirmed_exact_match"] == {"reports": 1.0}
        return
    with pytest.raises(ExportError) as failure:
        train_summarizer.train_summarizer(0, check, 0.99, settings)
    assert "confirmation" not in str(failure.value)


def test_training_fails_at_the_ceiling_naming_every_check() -> None:
    """An untrained model cannot answer every case: checks at steps 4, 6 and the ceiling 7, then
    an error with their figures."""
    settings = dataclasses.replace(FEW_STEPS, max_steps=7, check_every=2, first_check=4)
    with pytest.raises(ExportError) as failure:
        _train("captioner", 0, settings, target=1.0)
    message = str(failure.value)
    assert "below 100% after the ceiling of 7 steps" in message
    for step in (4, 6, 7):
        assert f"step {step}: 64x64 " in message
    assert "step 2:" not in message


def test_learning_rate_warms_up_decays_to_its_floor_and_stays_there() -> None:
    settings = TrainSettings(max_steps=100, warmup_steps=10, decay_steps=50, final_lr_share=0.1)
    factor = learning_rate_factor(settings)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(30) == pytest.approx(0.55)
    assert factor(50) == pytest.approx(0.1) and factor(99) == pytest.approx(0.1)


def test_training_pixels_match_the_saved_image_processor() -> None:
    """The fast numpy preprocessing used in training equals what preprocessor_config.json
    describes, for 64x64 scenes and their 128x128 twins."""
    rng = np.random.default_rng(3)
    images = [render_shapes(rng, scale=scale)[0] for scale in (1, 2, 1, 2)]
    processor = train_captioner.build_image_processor()
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(train_captioner.pixel_values(images), expected)


@pytest.mark.parametrize("name", TRAINERS)
def test_teacher_forced_check_scores_what_generate_would(name: str) -> None:
    """The check's one-pass score equals greedy generate()'s: 100% on the model's own greedy
    outputs as references, 50% when every other reference has one token changed."""
    model, tokenizer, _ = _train(name, 0)
    model_name = TRAINERS[name][1]
    demo = DEMO_MODELS[model_name]
    label, make_batch = next(iter(demo.check_batches.items()))
    batch = make_batch(tokenizer, np.random.default_rng(5), 8)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    eos = model.generation_config.eos_token_id
    references = []
    for row in model.generate(**inputs).tolist():
        generated = row[1:]  # after the decoder start token
        end = generated.index(eos) + 1 if eos in generated else len(generated)
        references.append(generated[:end])
    labels = pad_right(references, -100)
    assert teacher_forced_exact_match(model, inputs | {"labels": labels}) == 1.0, label
    vocab = tokenizer.get_vocab_size()
    for row, reference in enumerate(references[::2]):
        position = row % len(reference)
        labels[2 * row, position] = (reference[position] + 1) % vocab
    assert teacher_forced_exact_match(model, inputs | {"labels": labels}) == 0.5, label
