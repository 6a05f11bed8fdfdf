"""The models the integration tests serve, and the request shapes they use.

Tiny random checkpoints from tests/fixtures (a BART summarizer, a ViT+GPT-2 captioner) exported
by the project's exporter. The summarizer gets a long position table, so that a request forced
to LONG_TOKENS tokens with beams keeps its rows busy for seconds: long enough for the queue,
deadline, cancel and drain tests to act while it runs, and to tell "stopped" from "finished".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

SUMMARIZER = "tiny-summarizer"
CAPTIONER = "tiny-captioner"
POSITIONS = 2048
LONG_TOKENS = 2000
MAX_NUM_BEAMS = 4
# Forced to its full length with beams: seconds of decoding on the tiny summarizer.
LONG_REQUEST = {"max_new_tokens": LONG_TOKENS, "min_new_tokens": LONG_TOKENS, "num_beams": 4}
LONG_REQUEST_ROWS = 4
SHORT_REQUEST = {"max_new_tokens": 8}
TEXT = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12"


def export_tiny_models(out_dir: Path) -> Path:
    """Build and export both tiny models; returns the directory holding the two model dirs."""
    from export.exporter import export_model
    from tests.fixtures import tiny_text_models
    from tests.fixtures.tiny_image_models import build_vit_gpt2

    checkpoints, models = out_dir / "checkpoints", out_dir / "models"
    with mock.patch.object(tiny_text_models, "MAX_POSITIONS", POSITIONS):
        summarizer = tiny_text_models.build_bart(checkpoints / "bart")
    captioner = build_vit_gpt2(checkpoints / "vit-gpt2")
    quiet = {"progress": lambda message: None}
    export_model(summarizer, "summarization", models / SUMMARIZER, name=SUMMARIZER, **quiet)
    export_model(captioner, "captioning", models / CAPTIONER, name=CAPTIONER, **quiet)
    return models


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` until true; fail the test with `what` if it stays false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)
