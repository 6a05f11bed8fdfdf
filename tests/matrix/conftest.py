"""The checkpoint matrix (tests/fixtures/checkpoint_matrix.py), each checkpoint built, exported
and served at most once per session, and only when a selected test asks for it.

`make test` runs a representative subset (FAST: one byte-level BPE, one SentencePiece and one
WordPiece checkpoint); the rest are marked slow and run in `make test-slow`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from export.exporter import export_model
from service.client import AttnserveClient
from service.runtime.manifest import ModelManifest
from tests.fixtures.checkpoint_matrix import MATRIX, MatrixCheckpoint
from tests.fixtures.inprocess_server import serving

FAST = ("bart-large-cnn", "opus-mt-en-de", "blip-image-captioning-base")


def matrix_params(task: str) -> list:
    """The matrix's checkpoints for `task` as pytest params, slow-marked outside FAST."""
    return [
        pytest.param(name, id=name, marks=() if name in FAST else pytest.mark.slow)
        for name, spec in MATRIX.items()
        if spec.task == task
    ]


@dataclass(frozen=True)
class ExportedCheckpoint:
    spec: MatrixCheckpoint
    checkpoint: Path  # the tiny checkpoint, as save_pretrained wrote it
    models_dir: Path  # a --models directory holding only its export

    @property
    def model_dir(self) -> Path:
        return self.models_dir / self.spec.name


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """generate() on these tiny models is dispatch-bound: on a busy 2-core machine two torch
    threads made a step 9x slower than one (52 vs 6 ms). Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def matrix_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="session")
def matrix_checkpoints(matrix_root: Path) -> Callable[[str], Path]:
    """Builds a matrix checkpoint directory on first use (a second or less each)."""

    @functools.cache
    def build(name: str) -> Path:
        return MATRIX[name].build(matrix_root / name / "checkpoint")

    return build


@pytest.fixture(scope="session")
def matrix_exports(
    matrix_root: Path, matrix_checkpoints: Callable[[str], Path]
) -> Callable[[str], ExportedCheckpoint]:
    """Builds and exports a matrix checkpoint on first use; later calls reuse it."""

    @functools.cache
    def export(name: str) -> ExportedCheckpoint:
        spec = MATRIX[name]
        checkpoint = matrix_checkpoints(name)
        models_dir = matrix_root / name / "models"
        export_model(checkpoint, spec.task, models_dir / spec.name, progress=lambda _: None)
        return ExportedCheckpoint(spec, checkpoint, models_dir)

    return export


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest, matrix_exports) -> ExportedCheckpoint:
    """The export of the module's current checkpoint param (`indirect` parametrization)."""
    return matrix_exports(request.param)


@pytest.fixture(scope="module")
def hf_tokenizer(exported: ExportedCheckpoint):
    return AutoTokenizer.from_pretrained(exported.checkpoint)


@pytest.fixture(scope="module")
def manifest(exported: ExportedCheckpoint) -> ModelManifest:
    return ModelManifest.load(exported.model_dir)


@pytest.fixture(scope="module")
def client(exported: ExportedCheckpoint) -> Iterator[AttnserveClient]:
    """A real server on 127.0.0.1 port 0 serving the checkpoint's export, and a client (one
    ONNX Runtime thread: the tiny graphs gain nothing from more on a busy machine)."""
    with (
        serving(exported.models_dir, intra_op_threads=1) as server,
        AttnserveClient(server.target) as connected,
    ):
        yield connected


def assert_stream_joins_to_the_unary_answer(unary, chunks: list, hf_tokenizer) -> None:
    """A stream's deltas and token ids concatenate to the unary answer of the same request,
    whose text is the checkpoint tokenizer's decode of its tokens."""
    assert "".join(chunk.text_delta for chunk in chunks) == unary.text
    assert [t for chunk in chunks for t in chunk.token_ids] == list(unary.token_ids)
    assert unary.text == hf_tokenizer.decode(unary.token_ids, skip_special_tokens=True)
