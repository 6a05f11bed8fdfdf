"""fp16 and int8 exports load, keep the contract's io types and record agreement with fp32."""

from __future__ import annotations

import numpy as np
import pytest

from export.exporter import export_model
from export.ort_graphs import DecoderStep, OrtGraphs, greedy_tokens
from export.parity import sample_encoder_feeds
from service.runtime.manifest import ModelManifest

CASES = [("t5", "fp16"), ("bart", "int8")]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(case))
def converted(request, checkpoints, tmp_path_factory):
    family, dtype = request.param
    output = tmp_path_factory.mktemp(f"{family}-{dtype}") / "model"
    export_model(checkpoints[family], "summarization", output, dtype=dtype, progress=lambda _: None)
    return dtype, output


def test_manifest_records_dtype_and_agreement_with_fp32(converted):
    dtype, output = converted
    manifest = ModelManifest.load(output)
    assert manifest.dtype == dtype
    agreement = manifest.parity[dtype]
    assert 0.0 <= agreement["greedy_token_agreement"] <= 1.0
    assert not (output / "fp32").exists()


def test_float_io_types_follow_the_contract(converted):
    dtype, output = converted
    graphs = OrtGraphs(output, ModelManifest.load(output).dims)
    types = {i.name: i.type for i in graphs.decoder.get_inputs()}
    types |= {o.name: o.type for o in graphs.decoder.get_outputs()}
    expected = "tensor(float16)" if dtype == "fp16" else "tensor(float)"
    assert types["past_key_0"] == types["cross_value_0"] == types["present_key_0"] == expected
    assert types["logits"] == types["cross_attention"] == "tensor(float)"


def _first_step(model_dir):
    """The converted graphs, the sample feeds, and the first decoder step over them."""
    manifest = ModelManifest.load(model_dir)
    graphs = OrtGraphs(model_dir, manifest.dims)
    special = manifest.special_tokens
    feeds = sample_encoder_feeds("summarization", special, manifest.dims.vocab_size, None)
    states, *cross = graphs.run_encoder(feeds)
    rows = len(states)
    step = DecoderStep(
        input_ids=np.full((rows, 1), special.decoder_start, dtype=np.int64),
        position_ids=np.zeros((rows, 1), dtype=np.int64),
        self_attention_mask=np.ones((rows, 1), dtype=np.int64),
        encoder_attention_mask=feeds["attention_mask"],
        past=graphs.empty_past(rows),
        cross=cross,
    )
    return graphs, feeds, states, step


def test_converted_model_decodes_finite_logits(converted):
    _, output = converted
    graphs, feeds, states, step = _first_step(output)
    special = ModelManifest.load(output).special_tokens
    logits, presents = graphs.run_decoder(step)
    assert np.isfinite(states).all() and np.isfinite(logits).all()
    assert all(np.isfinite(p).all() for p in presents)
    assert all(greedy_tokens(graphs, feeds, [special.decoder_start], special.eos, 4))


def test_converted_cross_attention_stays_float32_and_close_to_fp32(converted, exports):
    _, output = converted
    graphs, feeds, _, step = _first_step(output)
    fp32_graphs, _, _, fp32_step = _first_step(exports[ModelManifest.load(output).architecture])
    weights = graphs.run_cross_attention(step)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, fp32_graphs.run_cross_attention(fp32_step), atol=2e-2)
    real = feeds["attention_mask"][:, None, :].astype(bool)
    np.testing.assert_allclose(np.where(real, weights, 0).sum(axis=-1), 1.0, atol=1e-2)
