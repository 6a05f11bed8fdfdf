"""The CUDA path (IOBinding, K/V kept on the device): same tokens as the CPU path.

Skipped where ONNX Runtime has no CUDAExecutionProvider. Models come from
$ATTNSERVE_GPU_TEST_MODELS (a directory of exported model dirs) when set, else are exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.engine.config import EngineConfig
from service.engine.served_model import ServedModel
from service.engine.sync_driver import run_to_completion
from service.engine.types import GenerationParams
from service.runtime.model import LoadedModel
from service.runtime.sessions import CUDA
from service.runtime.step_counters import StepCounters
from service.runtime.token_choice import DeviceArgmax

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        CUDA not in ort.get_available_providers(), reason="no CUDAExecutionProvider"
    ),
]

TEXTS = ["w1 w2 w3 w4", "w10 w11 w12 w13 w14 w15 w16 w17", "w5 w40", "w30 w31 w32"]
PARAMS = [
    GenerationParams(max_new_tokens=15),
    GenerationParams(max_new_tokens=15, num_beams=4, no_repeat_ngram_size=2, min_new_tokens=4),
    GenerationParams(max_new_tokens=12, do_sample=True, top_k=8, seed=1),
    GenerationParams(max_new_tokens=10, num_beams=3, length_penalty=0.5),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    given = os.environ.get("ATTNSERVE_GPU_TEST_MODELS")
    if given:
        return Path(given) / "bart"
    from export.exporter import export_model
    from tests.fixtures.tiny_text_models import build_bart

    root = tmp_path_factory.mktemp("cuda")
    export_model(build_bart(root / "ckpt"), "summarization", root / "bart", progress=print)
    return root / "bart"


def _served(model_dir: Path, device: str) -> ServedModel:
    config = EngineConfig(device=device, max_batch_rows=8)  # the 3-beam request joins late
    return ServedModel(LoadedModel.load(model_dir, device), config)


def test_cuda_batch_gives_the_cpu_tokens(model_dir):
    cpu = run_to_completion(_served(model_dir, "cpu"), TEXTS, PARAMS)
    cuda = run_to_completion(_served(model_dir, "cuda"), TEXTS, PARAMS)
    assert [r.token_ids for r in cuda] == [r.token_ids for r in cpu]


def test_kv_cache_stays_on_the_device_between_steps(model_dir):
    served = _served(model_dir, "cuda")
    served.scheduler.add(served.prepare(TEXTS[1], None, PARAMS[1], lambda _: None))
    served.step()
    served.step()
    batch = served.runner.batch
    assert batch is not None
    for tensor in (*batch.past, *batch.cross):
        assert isinstance(tensor, ort.OrtValue) and tensor.device_name().lower() == "cuda"
    assert batch.past_length == 2 and served.runner.kv_bytes() > 0


def test_device_row_ops_match_numpy():
    from service.runtime.kv_tensors import NumpyOps, OrtValueOps

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2, 5, 3)).astype(np.float32)
    y = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    host, device = NumpyOps(), OrtValueOps(np.float32, "cuda")

    def up(a):
        return ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0)

    rows, dst, src = np.array([3, 0]), np.array([0, 1]), np.array([2, 2])
    np.testing.assert_array_equal(device.take_rows(up(x), rows).numpy(), host.take_rows(x, rows))
    np.testing.assert_array_equal(
        device.concat_rows([up(x), up(y)], 6, True).numpy(), host.concat_rows([x, y], 6, True)
    )
    np.testing.assert_array_equal(device.slice_length(up(x), 1, 4).numpy(), x[:, :, 1:4])
    np.testing.assert_array_equal(
        device.copy_rows(up(x), dst, src).numpy(), host.copy_rows(x.copy(), dst, src)
    )


def test_greedy_rows_move_token_ids_not_logits(model_dir):
    served = _served(model_dir, "cuda")  # device_argmax "auto": on for cuda
    for text in TEXTS:
        served.scheduler.add(served.prepare(text, None, PARAMS[0], lambda _: None))
    served.step()
    served.model.counters.take()
    served.step()
    counted = served.model.counters.take()
    assert counted.device_to_host_bytes == len(TEXTS) * 8, "one int64 token id per row"
    assert counted.kv_allocations == 2 * served.manifest.dims.num_layers, "presents only"


def test_device_argmax_graph_matches_numpy_on_the_device():
    argmax = DeviceArgmax("tensor(float)", "cuda", 0, StepCounters())
    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(16, 1, 50265))).astype(np.float32)  # with ties
    on_device = ort.OrtValue.ortvalue_from_numpy(logits, "cuda", 0)
    host_rows = np.array([1, 7])
    last = logits[:, -1].copy()
    banned = np.array([[0, np.argmax(last[0])], [3, np.argmax(last[3])], [3, 2]])  # minimum lengths
    tokens, host_logits = argmax.run(on_device, host_rows, banned)
    last[banned[:, 0], banned[:, 1]] = -np.inf
    np.testing.assert_array_equal(tokens, np.argmax(last, axis=1))
    np.testing.assert_array_equal(host_logits, logits[host_rows, -1])
