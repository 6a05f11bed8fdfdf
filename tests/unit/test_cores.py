"""`--pin-cores`: which CPUs the decoder's pool threads and the beside encoder run on. The split
follows the CPUs the process may use (cpusets, taskset), it is refused where those CPUs are
shared through a CPU quota, and ONNX Runtime's pool threads really land on the CPUs asked."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.cli import build_parser
from service.config import SettingsError, settings_from_args
from service.engine.config import EngineConfig
from service.runtime.cores import (
    CorePlan,
    PinningUnavailable,
    affinity_entry,
    cpu_quota,
    plan_split,
    quota_threads,
)
from service.runtime.sessions import create_session

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@pytest.mark.parametrize(
    ("cpus", "decoder", "encoder"),
    [
        ([0, 1], (0,), (1,)),
        ([0, 1, 2], (0, 1), (2,)),
        ([0, 1, 2, 3], (0, 1), (2, 3)),
        (list(range(16)), tuple(range(8)), tuple(range(8, 16))),
        ([4, 5, 9, 12, 13], (4, 5, 9), (12, 13)),  # a container's cpuset: its own CPU numbers
    ],
)
def test_the_encoder_gets_the_last_half_and_the_decoder_the_rest(
    cpus: list[int], decoder: tuple[int, ...], encoder: tuple[int, ...]
):
    plan = plan_split(cpus, quota=None)
    assert plan == CorePlan(len(decoder) + 1, len(encoder), decoder, encoder)
    assert not set(plan.decoder_cpus) & set(plan.encoder_cpus)


def test_one_cpu_or_cpus_shared_through_a_quota_are_not_split():
    with pytest.raises(PinningUnavailable, match="only 1 CPU"):
        plan_split([3], quota=None)
    with pytest.raises(PinningUnavailable, match="quota of 2 CPUs over 16"):
        plan_split(list(range(16)), quota=2.0)
    with pytest.raises(PinningUnavailable, match="quota of 1.5 CPUs over 2"):
        plan_split([0, 1], quota=1.5)
    assert plan_split([0, 1], quota=2.0).encoder_cpus == (1,), "a quota of every CPU shares none"


def test_threads_follow_a_cpu_quota_below_the_allowed_cpus():
    assert quota_threads(list(range(64)), 2.0) == 2, "a pod limited to 2 CPUs on a 64-CPU node"
    assert quota_threads(list(range(64)), 1.5) == 2, "rounded up"
    assert quota_threads(list(range(64)), 0.25) == 1
    assert quota_threads([0, 1], 2.0) == 0, "a quota of every CPU: ONNX Runtime's default"
    assert quota_threads([0, 1], None) == 0


def test_onnx_runtime_affinities_count_cpus_from_one_and_take_them_in_turn():
    assert affinity_entry(2, (0,)) == "1"
    assert affinity_entry(4, (4, 5, 9)) == "5;6;10"
    assert affinity_entry(5, (0, 1)) == "1;2;1;2"
    assert affinity_entry(1, (0,)) == "", "one thread: only the caller, which is not pinned"


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "400000 200000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({}, None),
    ],
)
def test_the_cpu_quota_is_read_from_cgroup_v2_or_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota


def _settings(tmp_path: Path, *flags: str, environ: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", "--models", str(tmp_path), *flags])
    return settings_from_args(args, environ or {})


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs")
def test_auto_pins_beside_the_steps_on_the_cpu_and_leaves_hand_set_threads_alone(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    threads = _settings(tmp_path).engine.session_threads()
    assert threads.encoder_cpus and threads.decoder_cpus
    assert set(threads.encoder_cpus) | set(threads.decoder_cpus) == set(cpus)
    assert threads.decoder == len(threads.decoder_cpus) + 1
    assert threads.spinning is False
    for flags in (
        ("--pin-cores", "off"),
        ("--intra-op-threads", "2"),
        ("--encoder-threads", "1"),
        ("--no-encoder-beside-decode",),
    ):
        threads = _settings(tmp_path, *flags).engine.session_threads()
        assert (threads.decoder_cpus, threads.encoder_cpus) == ((), ()), flags
    by_hand = _settings(tmp_path, "--pin-cores", "on", "--intra-op-threads", "3").engine
    assert by_hand.session_threads().decoder == 3 and by_hand.session_threads().decoder_cpus
    variable = _settings(tmp_path, environ={"ATTNSERVE_PIN_CORES": "off"}).engine
    assert variable.session_threads().encoder_cpus == ()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--pin-cores", "sometimes"), "invalid choice"),
        (("--pin-cores", "on", "--device", "cuda"), "needs device 'cpu'"),
        (("--pin-cores", "on", "--no-encoder-beside-decode"), "encoder_beside_decode"),
    ],
)
def test_pinning_that_cannot_be_done_is_refused_at_start(
    tmp_path: Path, flags: tuple[str, ...], message: str
):
    with pytest.raises((SettingsError, SystemExit)) as raised:
        _settings(tmp_path, *flags)
    if raised.type is SettingsError:
        assert message in str(raised.value)


def _in_thread_on_one_cpu(work):
    """`work()` on a thread allowed one CPU only (affinity is per thread on Linux)."""
    result: dict[str, object] = {}

    def run():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        try:
            result["value"] = work()
        except Exception as exc:  # handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result


def test_on_with_one_allowed_cpu_is_refused_and_auto_then_does_not_pin():
    refused = _in_thread_on_one_cpu(lambda: EngineConfig(pin_cores="on").validate())
    assert isinstance(refused.get("error"), ValueError)
    assert "pin_cores is on, but only 1 CPU allowed" in str(refused["error"])
    auto = _in_thread_on_one_cpu(lambda: EngineConfig().session_threads())
    assert auto["value"].decoder_cpus == () and auto["value"].encoder_cpus == ()


def _thread_cpus() -> dict[int, set[int]]:
    """Every thread of this process (Linux thread ids) and the CPUs it may run on."""
    cpus = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            cpus[int(task.name)] = os.sched_getaffinity(int(task.name))
    return cpus


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs")
def test_onnx_runtime_pool_threads_run_on_the_cpus_asked(tmp_path: Path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "a"], ["b"])],
        "square",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [256, 256])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [256, 256])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "square.onnx")
    last = max(os.sched_getaffinity(0))
    before = set(_thread_cpus())
    session = create_session(tmp_path / "square.onnx", "cpu", 3, None, False, (last,))
    session.run(None, {"a": np.ones((256, 256), np.float32)})
    # a pool thread pins itself when it first runs, which on a busy machine may be later
    deadline = time.monotonic() + 10
    while True:
        pool = [cpus for tid, cpus in _thread_cpus().items() if tid not in before]
        if pool == [{last}, {last}] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pool == [{last}, {last}], "two pool threads, both on the CPU asked"
