"""The text families' exported graphs against transformers itself (BART, Pegasus, T5).

References come from transformers: the model's forward pass and its cache (logits, cross and
self-attention K/V) and `generate()` (tokens); never from our own wrappers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from export.families import family_for
from export.ort_graphs import DecoderStep, OrtGraphs, greedy_tokens
from export.parity import LOGITS_ATOL, parity_failures, reference_greedy, validate
from service.runtime.manifest import ModelManifest

FAMILIES = ["bart", "pegasus", "t5"]
# Per row: source length, past length; each row then adds NEW_TOKENS decoder tokens at once.
ROWS = [(9, 3), (4, 0), (6, 5)]
NEW_TOKENS = 2


@dataclass
class Exported:
    manifest: ModelManifest
    graphs: OrtGraphs
    model: torch.nn.Module  # the transformers model the export came from
    model_dir: Path


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, checkpoints, exports) -> Exported:
    model_dir = exports[request.param]
    manifest = ModelManifest.load(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoints[request.param]).eval()
    return Exported(manifest, OrtGraphs(model_dir, manifest.dims), model, model_dir)


def _sources(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(4, 60, length) for length, _ in ROWS]


def _padded(sources: list[np.ndarray], pad: int) -> dict[str, np.ndarray]:
    width = max(len(s) for s in sources)
    input_ids = np.full((len(sources), width), pad, dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, source in enumerate(sources):
        input_ids[row, : len(source)] = source
        mask[row, : len(source)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _reference(model, source: np.ndarray, decoder_ids: list[int]):
    """transformers' logits [n, V] and cache for one row alone, unpadded."""
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(source)[None],
            decoder_input_ids=torch.tensor([decoder_ids]),
            use_cache=True,
        )
    return out.logits[0].numpy(), out.cache


def test_model_directory_holds_the_contract_files(exported):
    names = sorted(p.name for p in exported.model_dir.iterdir())
    assert names == [
        "decoder.onnx",
        "encoder.onnx",
        "generation_config.json",
        "model.json",
        "tokenizer.json",
    ]
    io = [i.name for i in exported.graphs.decoder.get_inputs()]
    assert io == exported.manifest.decoder.inputs


def test_manifest_describes_the_checkpoint(exported):
    config, manifest = exported.model.config, exported.manifest
    assert manifest.model_type == config.model_type
    assert manifest.special_tokens.decoder_start == config.decoder_start_token_id
    assert manifest.special_tokens.eos == [config.eos_token_id]
    assert manifest.special_tokens.pad == config.pad_token_id
    saved = json.loads((exported.model_dir / "generation_config.json").read_text())
    assert saved["decoder_start_token_id"] == config.decoder_start_token_id
    assert manifest.generation.max_length == exported.model.generation_config.max_length


def test_parity_report_records_a_pass(exported):
    parity = exported.manifest.parity
    assert parity["passed"]
    assert parity["greedy_tokens_identical"] and parity["beam_tokens_identical"]
    assert parity["decoder_logits_max_scaled_diff"] <= 1.0
    assert parity["batched_vs_alone_max_scaled_diff"] <= 1.0


def test_cross_key_values_equal_transformers_cache(exported):
    rng = np.random.default_rng(3)
    sources = _sources(rng)
    _, *cross = exported.graphs.run_encoder(_padded(sources, exported.manifest.special_tokens.pad))
    start = exported.manifest.special_tokens.decoder_start
    for row, source in enumerate(sources):
        _, cache = _reference(exported.model, source, [start])
        for layer, ref in enumerate(cache.cross_attention_cache.layers):
            np.testing.assert_allclose(
                cross[2 * layer][row, :, : len(source)], ref.keys[0].numpy(), atol=LOGITS_ATOL
            )
            np.testing.assert_allclose(
                cross[2 * layer + 1][row, :, : len(source)],
                ref.values[0].numpy(),
                atol=LOGITS_ATOL,
            )


def test_rows_with_different_past_and_encoder_lengths_match_each_row_alone(exported):
    """One decoder call over rows with past lengths 3/0/5 and encoder lengths 9/4/6 (pasts taken
    from transformers' own cache, noise in every padded slot) gives each row's logits and
    presents as transformers computes them for that row alone."""
    rng = np.random.default_rng(4)
    special, dims = exported.manifest.special_tokens, exported.manifest.dims
    sources = _sources(rng)
    encoder_feeds = _padded(sources, special.pad)
    _, *cross = exported.graphs.run_encoder(encoder_feeds)
    max_past = max(past for _, past in ROWS)
    past_kv = [[] for _ in range(2 * dims.num_layers)]
    expected = []
    mask = np.zeros((len(ROWS), max_past + NEW_TOKENS), dtype=np.int64)
    input_ids, position_ids = [], []
    for row, ((_, past), source) in enumerate(zip(ROWS, sources, strict=True)):
        tokens = [special.decoder_start, *rng.integers(4, 60, past + NEW_TOKENS - 1).tolist()]
        logits, cache = _reference(exported.model, source, tokens)
        presents = [
            t[0].numpy()
            for layer in cache.self_attention_cache.layers
            for t in (layer.keys, layer.values)
        ]
        expected.append((logits[past:], presents))
        noise = rng.standard_normal((dims.num_heads, max_past - past, dims.head_dim))
        for i, present in enumerate(presents):
            past_kv[i].append(np.concatenate([noise, present[:, :past]], axis=1))
        mask[row, max_past - past :] = 1
        input_ids.append(tokens[past:])
        position_ids.append(list(range(past, past + NEW_TOKENS)))
    step = DecoderStep(
        input_ids=np.array(input_ids),
        position_ids=np.array(position_ids),
        self_attention_mask=mask,
        encoder_attention_mask=encoder_feeds["attention_mask"],
        past=[np.stack(kv).astype(np.float32) for kv in past_kv],
        cross=cross,
    )
    logits, presents = exported.graphs.run_decoder(step)
    for row, ((_, past), (ref_logits, ref_presents)) in enumerate(zip(ROWS, expected, strict=True)):
        np.testing.assert_allclose(logits[row], ref_logits, atol=LOGITS_ATOL)
        for present, ref in zip(presents, ref_presents, strict=True):
            np.testing.assert_allclose(present[row, :, max_past - past :], ref, atol=LOGITS_ATOL)


def test_greedy_tokens_equal_generate(exported):
    special = exported.manifest.special_tokens
    feeds = _padded(_sources(np.random.default_rng(5)), special.pad)
    prefix = [special.decoder_start]
    expected = reference_greedy(exported.model, feeds, special, len(prefix))
    assert greedy_tokens(exported.graphs, feeds, prefix, special.eos, 12) == expected
    assert len({tuple(tokens) for tokens in expected}) > 1  # the outputs depend on the input


def test_validation_fails_for_graphs_of_another_model(exports, tmp_path):
    """The parity check can fail: graphs exported from BART seed 0 against a BART of seed 1."""
    from tests.fixtures.tiny_text_models import build_bart

    other = AutoModelForSeq2SeqLM.from_pretrained(
        build_bart(tmp_path / "seed1", seed=1), attn_implementation="eager"
    ).eval()
    manifest = ModelManifest.load(exports["bart"])
    special = manifest.special_tokens
    feeds = _padded(_sources(np.random.default_rng(6)), special.pad)
    report = validate(
        family_for("bart", "summarization"),
        other,
        OrtGraphs(exports["bart"], manifest.dims),
        feeds,
        special,
        [special.decoder_start],
    )
    assert report["decoder_logits_max_scaled_diff"] > 1.0
    assert any(failure.startswith("decoder_logits") for failure in parity_failures(report))
