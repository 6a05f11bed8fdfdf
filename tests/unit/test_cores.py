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
    CoreSplit,
    PinningUnavailable,
    affinity_entry,
    allowed_cpus,
    cpu_quota,
    cpus_of,
    physical_cores,
    pin_current_thread,
    plan_split,
    quota_threads,
)
from service.runtime.sessions import create_session


def _pinnable() -> bool:
    try:
        plan_split(allowed_cpus(), cpu_quota())
    except PinningUnavailable:
        return False
    return True


TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
PINNABLE = _pinnable()  # two CPUs or more, not shared through a CPU quota (a limited CI runner)


def _topology(tmp_path: Path, siblings: dict[int, str]) -> Path:
    """A sysfs cpu directory whose CPUs have these thread_siblings_list values."""
    for cpu, text in siblings.items():
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("cpus", "decoder", "encoder"),
    [
        ([0, 1], ((0,),), ((1,),)),
        ([0, 1, 2], ((0,), (1,)), ((2,),)),
        ([0, 1, 2, 3], ((0,), (1,)), ((2,), (3,))),
        ([4, 5, 9, 12, 13], ((4,), (5,), (9,)), ((12,), (13,))),  # a cpuset: its own numbers
    ],
)
def test_the_encoder_gets_the_last_half_of_the_cores_and_the_decoder_the_rest(
    tmp_path: Path, cpus: list[int], decoder: tuple, encoder: tuple
):
    sysfs = _topology(tmp_path, {cpu: str(cpu) for cpu in cpus})  # no hyperthreads
    assert plan_split(cpus, quota=None, sysfs=sysfs) == CoreSplit(decoder, encoder)


def test_hyperthread_siblings_stay_on_one_side(tmp_path: Path):
    # Intel numbering: CPU n and n + 4 are the two threads of core n; a static CPU manager
    # hands out whole cores, e.g. {2, 3, 6, 7}
    sysfs = _topology(tmp_path, {n: f"{n % 4},{n % 4 + 4}" for n in range(8)})
    assert physical_cores([2, 3, 6, 7], sysfs) == [(2, 6), (3, 7)]
    assert plan_split([2, 3, 6, 7], None, sysfs) == CoreSplit(((2, 6),), ((3, 7),))
    assert affinity_entry(3, ((0, 4), (1, 5))) == "1,5;2,6", "a pool thread per whole core"
    one_core = _topology(tmp_path / "one", {0: "0-1", 1: "0-1"})
    assert plan_split([0, 1], None, one_core) == CoreSplit(((0,),), ((1,),)), "its two threads"


def test_cpus_without_topology_count_as_cores_of_their_own(tmp_path: Path):
    assert physical_cores([0, 1, 2], tmp_path) == [(0,), (1,), (2,)]


def test_one_cpu_or_cpus_shared_through_a_quota_are_not_split():
    with pytest.raises(PinningUnavailable, match="only 1 CPU"):
        plan_split([3], quota=None)
    with pytest.raises(PinningUnavailable, match="quota of 2 CPUs over 16"):
        plan_split(list(range(16)), quota=2.0)
    with pytest.raises(PinningUnavailable, match="quota of 1.5 CPUs over 2"):
        plan_split([0, 1], quota=1.5)
    assert plan_split([0, 1], quota=2.0, sysfs=Path("/nonexistent")).encoder == ((1,),), (
        "a quota of every CPU shares none"
    )


def test_threads_follow_a_cpu_quota_below_the_allowed_cpus():
    assert quota_threads(list(range(64)), 2.0) == 2, "a pod limited to 2 CPUs on a 64-CPU node"
    assert quota_threads(list(range(64)), 1.5) == 2, "rounded up"
    assert quota_threads(list(range(64)), 0.25) == 1
    assert quota_threads([0, 1], 2.0) == 0, "a quota of every CPU: ONNX Runtime's default"
    assert quota_threads([0, 1], None) == 0


def test_onnx_runtime_affinities_count_cpus_from_one_and_take_them_in_turn():
    assert affinity_entry(2, ((0,),)) == "1"
    assert affinity_entry(4, ((4,), (5,), (9,))) == "5;6;10"
    assert affinity_entry(5, ((0,), (1,))) == "1;2;1;2"
    assert affinity_entry(1, ((0,),)) == "", "one thread: only the caller, which is not pinned"


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cgroup.controllers": "cpu", "cpu.max": "max 100000"}, None),
        ({"cgroup.controllers": "cpu", "cpu.max": "150000 100000"}, 1.5),
        ({"cgroup.controllers": "cpu", "cpu.max": "400000 200000"}, 2.0),
        ({"cgroup.controllers": "cpu"}, None),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
        ({}, None),
    ],
)
def test_the_cpu_quota_is_read_from_cgroup_v2_or_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert cpu_quota(tmp_path, proc_cgroup=tmp_path / "no-such-file") == quota


def test_the_smallest_quota_from_the_own_cgroup_up_to_the_root_binds(tmp_path: Path):
    root = tmp_path / "cgroup"
    own = root / "kubepods.slice" / "pod1" / "server"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "kubepods.slice" / "cpu.max").write_text("800000 100000\n")
    (root / "kubepods.slice" / "pod1" / "cpu.max").write_text("200000 100000\n")  # the pod's
    (own / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods.slice/pod1/server\n")
    assert cpu_quota(root, proc) == 2.0
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert cpu_quota(v1, proc) == 1.5


def _settings(tmp_path: Path, *flags: str, environ: dict[str, str] | None = None):
    args = build_parser().parse_args(["serve", "--models", str(tmp_path), *flags])
    return settings_from_args(args, environ or {})


@pytest.mark.skipif(not PINNABLE, reason="needs two CPUs not shared through a CPU quota")
def test_auto_pins_beside_the_steps_on_the_cpu_and_leaves_hand_set_threads_alone(tmp_path):
    threads = _settings(tmp_path).engine.session_threads()
    encoder, decoder = cpus_of(threads.encoder_cpus), cpus_of(threads.decoder_cpus)
    assert encoder and decoder and not encoder & decoder
    assert encoder | decoder == set(allowed_cpus())
    assert threads.decoder == len(threads.decoder_cpus) + 1
    assert threads.encoder == len(threads.encoder_cpus)
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
    threads = by_hand.session_threads()
    assert threads.decoder == 3 and threads.decoder_cpus
    assert threads.encoder == len(threads.encoder_cpus), "the encoder keeps its own count"
    variable = _settings(tmp_path, environ={"ATTNSERVE_PIN_CORES": "off"}).engine
    assert variable.session_threads().encoder_cpus == ()


def test_a_thread_pinned_to_cpus_it_no_longer_has_runs_unpinned_and_says_so(caplog):
    outside = max(os.sched_getaffinity(0)) + 4096  # not a CPU of this machine
    result = _in_thread_on_one_cpu(lambda: pin_current_thread(((outside,),)))
    assert "error" not in result
    assert "encoder thread left unpinned" in caplog.text


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
    session = create_session(tmp_path / "square.onnx", "cpu", 3, None, False, ((last,),))
    session.run(None, {"a": np.ones((256, 256), np.float32)})
    # a pool thread pins itself when it first runs, which on a busy machine may be later
    deadline = time.monotonic() + 10
    while True:
        pool = [cpus for tid, cpus in _thread_cpus().items() if tid not in before]
        if pool == [{last}, {last}] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pool == [{last}, {last}], "two pool threads, both on the CPU asked"
