"""`attnserve client ...` against a real server: what it prints and its exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main
from service.client import AttnserveClient
from tests.fixtures.inprocess_server import InProcessServer
from tests.integration.models import CAPTIONER, SUMMARIZER, TEXT


def run_cli(server: InProcessServer, *args: str) -> int:
    return main(["client", "--target", server.target, *args])


def test_client_models_prints_every_model(server: InProcessServer, capsys: pytest.CaptureFixture):
    assert run_cli(server, "models") == 0

    printed = capsys.readouterr().out
    assert SUMMARIZER in printed and CAPTIONER in printed


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_client_summarize_prints_the_summary(
    server: InProcessServer,
    client: AttnserveClient,
    capsys: pytest.CaptureFixture,
    stream: list[str],
):
    expected = client.summarize(TEXT, max_new_tokens=10, num_beams=2).text

    assert (
        run_cli(
            server,
            "summarize",
            "--text",
            TEXT,
            "--max-new-tokens",
            "10",
            "--num-beams",
            "2",
            *stream,
        )
        == 0
    )

    assert capsys.readouterr().out == expected + "\n"


@pytest.fixture
def image_file(png_image: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(png_image)
    return path


def test_client_caption_reads_the_image_file(
    server: InProcessServer,
    client: AttnserveClient,
    png_image: bytes,
    image_file: Path,
    capsys: pytest.CaptureFixture,
):

    assert run_cli(server, "caption", "--image", str(image_file), "--stream") == 0

    assert capsys.readouterr().out == client.caption(png_image).text + "\n"


def test_client_caption_passes_the_prompt(
    server: InProcessServer,
    client: AttnserveClient,
    png_image: bytes,
    image_file: Path,
    capsys: pytest.CaptureFixture,
):

    assert run_cli(server, "caption", "--image", str(image_file), "--prompt", "w4 w5") == 0

    assert capsys.readouterr().out == client.caption(png_image, prompt="w4 w5").text + "\n"


def test_client_reports_an_rpc_error_with_its_code(
    server: InProcessServer, capsys: pytest.CaptureFixture
):
    assert run_cli(server, "summarize", "--text", TEXT, "--model", "nope") == 1

    assert capsys.readouterr().err.startswith("error: NOT_FOUND: ")


def test_client_reports_an_unreadable_image_file(
    server: InProcessServer, tmp_path: Path, capsys: pytest.CaptureFixture
):
    assert run_cli(server, "caption", "--image", str(tmp_path / "missing.png")) == 2

    assert "missing.png" in capsys.readouterr().err
