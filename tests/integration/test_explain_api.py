"""GenerationParams.explain over the real gRPC API: what a response and a stream carry, and
every misuse answered with INVALID_ARGUMENT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from service.cli import main
from service.client import AttnserveClient
from service.client.explain_view import PANEL, PANELS_PER_ROW
from service.runtime.manifest import MANIFEST_FILE
from tests.fixtures.inprocess_server import InProcessServer, serving
from tests.integration.models import CAPTIONER, SUMMARIZER, TEXT

EXPLAIN = {"max_new_tokens": 8, "explain": True}


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code(), failure.value.details()


def test_summary_carries_one_attribution_per_generated_token(client: AttnserveClient):
    response = client.summarize(TEXT, model=SUMMARIZER, **EXPLAIN)
    attribution = response.attribution
    assert attribution.reduction.startswith("mean over heads")
    assert [t.token_id for t in attribution.tokens] == list(response.token_ids)
    assert len(attribution.tokens) == response.output_tokens
    for token in attribution.tokens:
        assert len(token.top_spans) == 5  # the default top-k
        weights = [span.weight for span in token.top_spans]
        assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1 + 1e-5
        for span in token.top_spans:
            assert TEXT[span.start : span.end] == span.text
        assert not token.weights  # the full distribution only on request


def test_full_distribution_is_aligned_with_the_source_tokens(client: AttnserveClient):
    response = client.summarize(
        TEXT, model=SUMMARIZER, explain_full=True, explain_top_k=2, **EXPLAIN
    )
    attribution = response.attribution
    words = TEXT.split()
    assert [s.text for s in attribution.source_tokens if s.text] == words
    for token in attribution.tokens:
        assert len(token.weights) == len(attribution.source_tokens)
        assert sum(token.weights) == pytest.approx(1.0, abs=1e-4)
        assert len(token.top_spans) == 2


def test_request_without_explain_has_no_attribution(client: AttnserveClient):
    response = client.summarize(TEXT, model=SUMMARIZER, max_new_tokens=8)
    assert not response.HasField("attribution")


def test_stream_chunks_carry_the_attribution_of_their_tokens(client: AttnserveClient):
    unary = client.summarize(TEXT, model=SUMMARIZER, explain_full=True, **EXPLAIN)
    chunks = list(client.summarize_stream(TEXT, model=SUMMARIZER, explain_full=True, **EXPLAIN))
    streamed = [t for chunk in chunks for t in chunk.attribution.tokens]
    assert [t.token_id for t in streamed] == list(unary.token_ids)
    for chunk in chunks:
        assert len(chunk.attribution.tokens) == len(chunk.token_ids)
    np.testing.assert_allclose(
        [list(t.weights) for t in streamed],
        [list(t.weights) for t in unary.attribution.tokens],
        atol=1e-6,
    )
    described = [chunk for chunk in chunks if chunk.attribution.source_tokens]
    assert len(described) == 1 and described[0] is chunks[0]


def test_beam_search_stream_explains_the_returned_beam(client: AttnserveClient):
    params = {**EXPLAIN, "num_beams": 3}
    unary = client.summarize(TEXT, model=SUMMARIZER, **params)
    chunks = list(client.summarize_stream(TEXT, model=SUMMARIZER, **params))
    streamed = [t.token_id for chunk in chunks for t in chunk.attribution.tokens]
    assert streamed == list(unary.token_ids) == [t.token_id for t in unary.attribution.tokens]


def test_caption_attribution_is_a_patch_grid(client: AttnserveClient, png_image: bytes):
    response = client.caption(png_image, model=CAPTIONER, **EXPLAIN)
    attribution = response.attribution
    cells = attribution.grid_rows * attribution.grid_cols
    assert cells > 0
    for token in attribution.tokens:
        assert len(token.weights) == cells and not token.top_spans
        assert 0 < sum(token.weights) <= 1 + 1e-5  # the class token holds the rest


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"explain": True, "explain_top_k": 0}, "explain_top_k"),
        ({"explain": True, "explain_top_k": 65}, "explain_top_k"),
        ({"explain_full": True}, "explain_full needs explain=true"),
        ({"explain_top_k": 3}, "explain_top_k needs explain=true"),
    ],
)
def test_bad_explain_options_are_invalid_argument(client: AttnserveClient, params, named):
    code, details = _code(lambda: client.summarize(TEXT, model=SUMMARIZER, **params))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details


def test_explain_on_a_model_exported_without_attention_is_invalid_argument(
    models_dir: Path, tmp_path: Path
):
    old = tmp_path / SUMMARIZER
    shutil.copytree(models_dir / SUMMARIZER, old)
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    manifest.pop("cross_attention")
    manifest["decoder"]["outputs"].remove("cross_attention")
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with serving(tmp_path) as server, AttnserveClient(server.target) as old_client:
        assert old_client.summarize(TEXT, max_new_tokens=4).text is not None
        code, details = _code(lambda: old_client.summarize(TEXT, **EXPLAIN))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "exported without cross-attention" in details


def _cli(server: InProcessServer, *args: str) -> int:
    return main(["client", "--target", server.target, *args])


def test_client_summarize_explain_prints_each_token_with_its_source_words(
    server: InProcessServer, client: AttnserveClient, capsys: pytest.CaptureFixture
):
    expected = client.summarize(TEXT, model=SUMMARIZER, **EXPLAIN)
    args = ["--text", TEXT, "--model", SUMMARIZER, "--max-new-tokens", "8", "--explain"]
    assert _cli(server, "summarize", *args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == expected.text
    token_lines = lines[lines.index(f"attention ({expected.attribution.reduction}):") + 1 :]
    assert len(token_lines) == len(expected.attribution.tokens)
    for line, token in zip(token_lines, expected.attribution.tokens, strict=True):
        assert line.split("<-")[1].split()[0] == token.top_spans[0].text


def test_client_caption_heatmap_writes_one_panel_per_token(
    server: InProcessServer,
    client: AttnserveClient,
    png_image: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
):
    image_file, heatmap = tmp_path / "in.png", tmp_path / "heat.png"
    image_file.write_bytes(png_image)
    expected = client.caption(png_image, model=CAPTIONER, max_new_tokens=4, explain=True)
    args = ["--image", str(image_file), "--model", CAPTIONER, "--max-new-tokens", "4"]
    assert _cli(server, "caption", *args, "--explain", "--heatmap", str(heatmap), "--stream") == 0
    assert f"heatmap: {heatmap}" in capsys.readouterr().out
    panels = len(expected.attribution.tokens)
    with Image.open(heatmap) as picture:
        assert picture.width == min(panels, PANELS_PER_ROW) * PANEL


def test_client_heatmap_without_explain_is_a_usage_error(
    server: InProcessServer, png_image: bytes, tmp_path: Path, capsys: pytest.CaptureFixture
):
    image_file = tmp_path / "in.png"
    image_file.write_bytes(png_image)
    assert _cli(server, "caption", "--image", str(image_file), "--heatmap", "x.png") == 2
    assert "--heatmap needs --explain" in capsys.readouterr().err
