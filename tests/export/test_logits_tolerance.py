"""The logits gate scales with the logits: a correct export of a model with large logits passes,
a model that really differs still fails, however its tokens come out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from export.exporter import export_model
from export.families import family_for
from export.ort_graphs import OrtGraphs
from export.parity import (
    LOGITS_ATOL,
    LOGITS_RTOL,
    compare,
    parity_failures,
    sample_encoder_feeds,
    validate,
)
from service.runtime.manifest import ModelManifest
from tests.fixtures.tiny_text_models import build_bart

# The tiny BART's logits reach about 30; scaled by 1000 they reach tens of thousands, where
# float32 rounding alone differs by far more than LOGITS_ATOL.
LARGE_SCALE = 1000.0


def _scale_lm_head(model: torch.nn.Module, factor: float) -> None:
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)


@pytest.fixture(scope="module")
def large_logits_checkpoint(tmp_path_factory) -> Path:
    checkpoint = build_bart(tmp_path_factory.mktemp("large-logits"))
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    _scale_lm_head(model, LARGE_SCALE)
    model.save_pretrained(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def large_logits_export(large_logits_checkpoint, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("large-logits-export") / "model"
    export_model(large_logits_checkpoint, "summarization", output, progress=lambda _: None)
    return output


def test_export_of_a_model_with_large_logits_passes(large_logits_export):
    parity = ModelManifest.load(large_logits_export).parity
    assert parity["passed"], parity
    assert parity["greedy_tokens_identical"] and parity["beam_tokens_identical"]
    # what an absolute tolerance alone would have refused
    assert parity["decoder_logits_max_abs_diff"] > LOGITS_ATOL
    assert parity["decoder_logits_max_scaled_diff"] <= 1.0
    assert (parity["logits_atol"], parity["logits_rtol"]) == (LOGITS_ATOL, LOGITS_RTOL)


def test_logits_that_really_differ_fail_even_with_identical_greedy_tokens(
    large_logits_checkpoint, large_logits_export
):
    """The same model with its lm head 0.1% larger: every argmax is unchanged, so greedy tokens
    agree, but the logits differ by 1e-3 of their scale, 100 times the relative tolerance."""
    model = AutoModelForSeq2SeqLM.from_pretrained(
        large_logits_checkpoint, attn_implementation="eager"
    ).eval()
    _scale_lm_head(model, 1.001)
    manifest = ModelManifest.load(large_logits_export)
    special = manifest.special_tokens
    family = family_for("bart", "summarization")
    report = validate(
        family,
        model,
        OrtGraphs(large_logits_export, manifest.dims),
        sample_encoder_feeds("summarization", special, manifest.dims.vocab_size, None),
        special,
        [special.decoder_start],
    )
    assert report["greedy_tokens_identical"]
    assert report["decoder_logits_max_scaled_diff"] > 1.0
    assert any(failure.startswith("decoder_logits") for failure in parity_failures(report))


def test_tolerance_follows_the_scale_of_each_vector():
    """A logit near 0 in a row of large logits may carry the row's rounding error; a row of small
    logits gets the absolute tolerance."""
    reference = np.array([[2000.0, 0.5, -3.0], [0.5, 0.2, -0.3]], dtype=np.float32)
    row_error = np.array([[0.0, 0.9 * LOGITS_RTOL * 2000.0, 0.0], [0.0, 0.0, 0.0]])
    assert compare(reference + row_error, reference).max_scaled <= 1.0
    small_row_error = np.array([[0.0, 0.0, 0.0], [0.0, 2 * LOGITS_ATOL, 0.0]])
    assert compare(reference + small_row_error, reference).max_scaled > 1.0


def test_nan_never_passes():
    reference = np.ones((2, 3), dtype=np.float32)
    actual = reference.copy()
    actual[1, 2] = np.nan
    assert not compare(actual, reference).max_scaled <= 1.0
