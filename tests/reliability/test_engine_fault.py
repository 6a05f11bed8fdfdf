"""A runtime fault in one decode step fails only the requests of that batch, with the cause
logged, and the server keeps serving.

The fault is real: the summarizer's decoder graph is rebuilt with a Reshape of its logits to a
fixed [1, 1, V], so ONNX Runtime fails any step with more than one row, while a request alone
still runs.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving

TEXT = "a short text to summarize"


def _fail_on_batches(decoder_path: Path, vocab_size: int) -> None:
    """Rewrite `logits` as Reshape(logits, [1, 1, V]): valid for one row, an error for more."""
    model = onnx.load(str(decoder_path), load_external_data=True)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["logits_unchecked" if o == "logits" else o for o in node.output]
    shape = numpy_helper.from_array(np.array([1, 1, vocab_size], dtype=np.int64), "one_row")
    graph.initializer.append(shape)
    graph.node.append(helper.make_node("Reshape", ["logits_unchecked", "one_row"], ["logits"]))
    onnx.save(model, str(decoder_path))


@pytest.fixture(scope="module")
def faulty_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faulty-models")
    for model_dir in models_dir.iterdir():
        if (model_dir / "model.json").is_file():
            shutil.copytree(model_dir, root / model_dir.name)
    summarizer = next(d for d in root.iterdir() if "summar" in d.name)
    vocab = onnx.load(str(summarizer / "decoder.onnx"), load_external_data=False)
    vocab_size = vocab.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    _fail_on_batches(summarizer / "decoder.onnx", vocab_size)
    return root


def test_a_failing_step_fails_its_batch_only_and_the_server_goes_on(faulty_models, caplog):
    with serving(faulty_models, max_batch_rows=8) as server, AttnserveClient(server.target) as c:
        assert c.summarize(TEXT, max_new_tokens=4, timeout=60).output_tokens > 0  # alone: fine

        def summarize(_: int) -> grpc.StatusCode:
            try:
                c.summarize(TEXT, max_new_tokens=40, min_new_tokens=40, timeout=60)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        with caplog.at_level(logging.ERROR), ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(summarize, range(4)))
        assert grpc.StatusCode.INTERNAL in codes  # the rows batched together failed
        assert set(codes) <= {grpc.StatusCode.INTERNAL, grpc.StatusCode.OK}
        assert "decode step" in caplog.text and "Reshape" in caplog.text  # the cause is logged

        assert c.summarize(TEXT, max_new_tokens=4, timeout=60).output_tokens > 0  # still serving
        assert server.engine.running_rows() == 0
