"""The decoder graph's `cross_attention` output against transformers' own output_attentions.

The reference is each checkpoint's transformers model (eager attention) run with
output_attentions=True on one row alone, unpadded; its `cross_attentions` reduced here as the
contract says (mean over heads and the manifest's layers). The graph is run on a padded batch
(mixed encoder lengths, mixed left-padded past lengths, noise in every padded slot) and on each
row alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM

from export.attention_parity import attention_failures, check_cross_attention
from export.errors import ExportError
from export.exporter import export_model
from export.families import family_for
from export.ort_graphs import DecoderStep, OrtGraphs
from export.parity import sample_encoder_feeds
from service.cli import main
from service.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from tests.fixtures.tiny_image_models import IMAGE_SIZE, PATCH_SIZE
from tests.fixtures.tiny_text_models import build_bart

TOLERANCE = 1e-4
CAPTIONERS = ("vit-gpt2", "vit-bert", "blip")
FAMILIES = ("bart", "t5", *CAPTIONERS)
SOURCE_LENGTHS = (9, 4, 6)  # text rows, right-padded to 9
PAST_LENGTHS = (3, 0, 5)  # decoder tokens before the checked step, left-padded to 5
NEW_TOKENS = 2
IMAGE_PADDING = 3  # noise encoder positions appended to every image row, masked out


@dataclass
class Exported:
    name: str
    model: torch.nn.Module  # the transformers checkpoint, eager attention
    manifest: ModelManifest
    graphs: OrtGraphs


def _load(name: str, checkpoint: Path, model_dir: Path) -> Exported:
    loader = AutoModelForImageTextToText if name in CAPTIONERS else AutoModelForSeq2SeqLM
    model = loader.from_pretrained(checkpoint, attn_implementation="eager").eval()
    manifest = ModelManifest.load(model_dir)
    return Exported(name, model, manifest, OrtGraphs(model_dir, manifest.dims))


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, checkpoints, exports) -> Exported:
    return _load(request.param, checkpoints[request.param], exports[request.param])


def transformers_cross_attention(
    exported: Exported, inputs: dict[str, torch.Tensor], tokens: list[int], layers: Sequence[int]
) -> np.ndarray:
    """[T, S]: the model's cross_attentions for one unpadded row, averaged over heads and layers."""
    model, ids = exported.model, torch.tensor([tokens])
    with torch.no_grad():
        if exported.name == "blip":  # BLIP's forward drops its text decoder's cross_attentions
            states = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
            out = model.text_decoder(
                input_ids=ids, encoder_hidden_states=states, output_attentions=True
            )
        else:
            out = model(**inputs, decoder_input_ids=ids, output_attentions=True)
    per_layer = torch.stack([out.cross_attentions[layer] for layer in layers])  # [l, 1, H, T, S]
    return per_layer.mean(dim=(0, 2))[0].numpy()


@dataclass
class Row:
    inputs: dict[str, torch.Tensor]  # the row's own encoder inputs, unpadded
    tokens: list[int]  # decoder tokens: the past, then NEW_TOKENS new ones
    past: int
    encoder_length: int


def _rows(exported: Exported) -> list[Row]:
    rng = np.random.default_rng(11)
    start = [exported.manifest.special_tokens.decoder_start, *exported.manifest.decoder_prompt]
    rows = []
    for row, past in enumerate(PAST_LENGTHS):
        tokens = (start + rng.integers(5, 60, 8).tolist())[: past + NEW_TOKENS]
        if exported.manifest.task == "captioning":
            pixels = rng.standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
            inputs = {"pixel_values": torch.from_numpy(pixels)}
            length = exported.manifest.max_input_tokens
        else:
            ids = torch.from_numpy(rng.integers(5, 60, (1, SOURCE_LENGTHS[row])))
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            length = SOURCE_LENGTHS[row]
        rows.append(Row(inputs, tokens, past, length))
    return rows


def _row_alone_step(exported: Exported, row: Row) -> DecoderStep:
    """The row's new tokens over its own past (computed by the graph) and unpadded encoder."""
    graphs = exported.graphs
    _, *cross = graphs.run_encoder({k: v.numpy() for k, v in row.inputs.items()})
    mask = np.ones((1, row.encoder_length), dtype=np.int64)
    past = graphs.empty_past(1)
    if row.past:
        prefill = _step(row.tokens[: row.past], 0, past, mask, cross)
        _, past = graphs.run_decoder(prefill)
    return _step(row.tokens[row.past :], row.past, past, mask, cross)


def _step(tokens, start, past, encoder_mask, cross) -> DecoderStep:
    return DecoderStep(
        input_ids=np.array([tokens], dtype=np.int64),
        position_ids=np.arange(start, start + len(tokens), dtype=np.int64)[None],
        self_attention_mask=np.ones((1, start + len(tokens)), dtype=np.int64),
        encoder_attention_mask=encoder_mask,
        past=past,
        cross=cross,
    )


def _batched_step(alone: list[DecoderStep], extra_source: int) -> DecoderStep:
    """The rows' steps in one call: pasts left-padded and encoder K/V right-padded to the longest
    plus `extra_source` positions, with noise in every padded slot."""
    rng = np.random.default_rng(12)
    width = max(step.past[0].shape[2] for step in alone)
    source = max(step.cross[0].shape[2] for step in alone) + extra_source

    def pad(x: np.ndarray, axis: int, size: int, left: bool) -> np.ndarray:
        shape = list(x.shape)
        shape[axis] = size - x.shape[axis]
        noise = rng.standard_normal(shape).astype(x.dtype)
        return np.concatenate([noise, x] if left else [x, noise], axis=axis)

    def mask(m: np.ndarray, size: int, left: bool) -> np.ndarray:
        zeros = np.zeros((1, size - m.shape[1]), dtype=np.int64)
        return np.concatenate([zeros, m] if left else [m, zeros], axis=1)

    return DecoderStep(
        input_ids=np.concatenate([s.input_ids for s in alone]),
        position_ids=np.concatenate([s.position_ids for s in alone]),
        self_attention_mask=np.concatenate(
            [mask(s.self_attention_mask, width + NEW_TOKENS, left=True) for s in alone]
        ),
        encoder_attention_mask=np.concatenate(
            [mask(s.encoder_attention_mask, source, left=False) for s in alone]
        ),
        past=[
            np.concatenate([pad(s.past[i], 2, width, left=True) for s in alone])
            for i in range(len(alone[0].past))
        ],
        cross=[
            np.concatenate([pad(s.cross[i], 2, source, left=False) for s in alone])
            for i in range(len(alone[0].cross))
        ],
    )


@pytest.fixture(scope="module")
def attention(exported):
    """Per row: transformers' reduced cross-attention [NEW_TOKENS, S_row], the graph's for the
    row alone, and the graph's row of the padded batch."""
    rows = _rows(exported)
    layers = exported.manifest.cross_attention.layers
    expected = [
        transformers_cross_attention(exported, row.inputs, row.tokens, layers)[row.past :]
        for row in rows
    ]
    steps = [_row_alone_step(exported, row) for row in rows]
    alone = [exported.graphs.run_cross_attention(step)[0] for step in steps]
    extra = IMAGE_PADDING if exported.manifest.task == "captioning" else 0
    batched_step = _batched_step(steps, extra)
    batched = exported.graphs.run_cross_attention(batched_step)
    return expected, alone, batched, batched_step.encoder_attention_mask


def test_row_alone_equals_transformers_output_attentions(attention):
    expected, alone, _, _ = attention
    for want, got in zip(expected, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


def test_padded_batch_rows_equal_transformers_output_attentions(attention):
    expected, _, batched, _ = attention
    for row, want in enumerate(expected):
        np.testing.assert_allclose(batched[row, :, : want.shape[1]], want, rtol=0, atol=TOLERANCE)


def test_weights_sum_to_one_over_real_positions_and_vanish_on_padding(attention):
    _, _, batched, encoder_mask = attention
    real = encoder_mask[:, None, :].astype(bool)
    assert batched.dtype == np.float32 and batched.shape[2] == encoder_mask.shape[1]
    np.testing.assert_allclose(np.where(real, batched, 0).sum(axis=-1), 1.0, atol=1e-5)
    assert np.abs(np.where(real, 0, batched)).max() < 1e-6
    assert (~real).any()  # the batch has padded positions to check


def test_export_records_cross_attention_parity(exported):
    parity = exported.manifest.parity
    assert parity["passed"]
    assert parity["cross_attention_layers"] == exported.manifest.cross_attention.layers
    assert parity["cross_attention_batched_max_abs_diff"] <= TOLERANCE
    assert parity["cross_attention_alone_max_abs_diff"] <= TOLERANCE


def test_manifest_describes_the_output_with_all_layers_by_default(exported):
    spec = exported.manifest.cross_attention
    assert spec.output == exported.manifest.decoder.outputs[-1] == "cross_attention"
    assert spec.layers == list(range(exported.manifest.dims.num_layers))
    assert spec.reduction == "mean over heads and layers"


@pytest.mark.parametrize("name", CAPTIONERS)
def test_image_manifest_maps_encoder_positions_to_the_patch_grid(name, exports):
    manifest = ModelManifest.load(exports[name])
    spec = manifest.cross_attention
    grid = IMAGE_SIZE // PATCH_SIZE
    graphs = OrtGraphs(exports[name], manifest.dims)
    pixels = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    encoder_length = graphs.run_encoder({"pixel_values": pixels})[0].shape[1]
    assert spec.patch_grid == [grid, grid]
    assert spec.source_prefix == 1  # ViT's and BLIP's class token
    assert spec.source_prefix + grid * grid == encoder_length == manifest.max_input_tokens


def test_text_manifest_has_no_patch_grid(exports):
    spec = ModelManifest.load(exports["bart"]).cross_attention
    assert spec.patch_grid is None and spec.source_prefix == 0


@pytest.fixture(scope="module")
def last_layer_only(checkpoints, tmp_path_factory) -> Exported:
    """BART exported through the CLI with `--attention-layers 1` (of its 2 layers)."""
    output = tmp_path_factory.mktemp("layers") / "bart-layer1"
    argv = ["export", "--model", str(checkpoints["bart"]), "--task", "summarization"]
    assert main([*argv, "--output", str(output), "--attention-layers", "1"]) == 0
    return _load("bart", checkpoints["bart"], output)


def test_attention_layers_flag_is_recorded_in_the_manifest(last_layer_only):
    assert last_layer_only.manifest.cross_attention.layers == [1]
    assert last_layer_only.manifest.parity["cross_attention_layers"] == [1]


def test_attention_layers_subset_averages_only_those_layers(last_layer_only):
    row = _rows(last_layer_only)[0]
    got = last_layer_only.graphs.run_cross_attention(_row_alone_step(last_layer_only, row))[0]
    only_last = transformers_cross_attention(last_layer_only, row.inputs, row.tokens, [1])
    both = transformers_cross_attention(last_layer_only, row.inputs, row.tokens, [0, 1])
    np.testing.assert_allclose(got, only_last[row.past :], rtol=0, atol=TOLERANCE)
    assert np.abs(got - both[row.past :]).max() > 10 * TOLERANCE  # the choice matters


@pytest.mark.parametrize(
    ("layers", "message"),
    [([2], "out of range.*2 layers"), ([-1], "out of range"), ([0, 0], "twice"), ([], "empty")],
)
def test_bad_attention_layers_are_a_clear_export_error(layers, message, checkpoints, tmp_path):
    output = tmp_path / "out"
    with pytest.raises(ExportError, match=message):
        export_model(
            checkpoints["bart"], "summarization", output, attention_layers=layers, progress=print
        )
    assert not output.exists()


def test_cli_rejects_attention_layers_that_are_not_numbers(checkpoints, tmp_path, capsys):
    argv = ["export", "--model", str(checkpoints["bart"]), "--task", "summarization"]
    code = main([*argv, "--output", str(tmp_path / "out"), "--attention-layers", "0,last"])
    stderr = capsys.readouterr().err
    assert code == 1 and "--attention-layers" in stderr and "Traceback" not in stderr


def test_attention_check_fails_for_graphs_of_another_model(exports, tmp_path):
    other = AutoModelForSeq2SeqLM.from_pretrained(
        build_bart(tmp_path / "seed1", seed=1), attn_implementation="eager"
    ).eval()
    manifest = ModelManifest.load(exports["bart"])
    special = manifest.special_tokens
    feeds = sample_encoder_feeds("summarization", special, manifest.dims.vocab_size, None)
    graphs = OrtGraphs(exports["bart"], manifest.dims)
    family = family_for("bart", "summarization")
    report = check_cross_attention(family, other, graphs, feeds, [special.decoder_start], [0, 1])
    assert report["cross_attention_batched_max_abs_diff"] > TOLERANCE
    assert any("cross_attention_batched" in failure for failure in attention_failures(report))


def _manifest_data(model_dir: Path) -> dict:
    return json.loads((model_dir / MANIFEST_FILE).read_text())


def test_manifest_round_trips_the_cross_attention_spec(exports):
    manifest = ModelManifest.load(exports["vit-gpt2"])
    again = ModelManifest.from_dict(json.loads(manifest.to_json()))
    assert again.cross_attention == manifest.cross_attention


def test_manifest_without_cross_attention_still_loads(exports, tmp_path):
    model_dir = shutil.copytree(exports["bart"], tmp_path / "old")
    data = _manifest_data(model_dir)
    del data["cross_attention"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data))
    assert ModelManifest.load(model_dir).cross_attention is None


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("bart", {"layers": [0, 2]}, "must lie in 0..1"),
        ("bart", {"layers": []}, "empty"),
        ("bart", {"layers": [1, 1]}, "duplicates"),
        ("bart", {"output": "attention"}, "not a decoder output"),
        ("vit-gpt2", {"patch_grid": None}, "patch_grid"),
        ("vit-gpt2", {"source_prefix": 0}, "encoder length"),
    ],
)
def test_manifest_rejects_an_inconsistent_cross_attention_spec(name, change, message, exports):
    data = _manifest_data(exports[name])
    data["cross_attention"] |= change
    with pytest.raises(ManifestError, match=message):
        ModelManifest.from_dict(data)
