"""ONNX Runtime session creation: one place that decides providers and thread counts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnxruntime as ort

from service.runtime.cores import CpuGroups, affinity_entry

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used by this ONNX Runtime build or machine."""


def provider_for(device: str) -> str:
    """The execution provider for a device, checked against this ONNX Runtime build."""
    if device == "cpu":
        return CPU
    if device == "cuda":
        if CUDA not in ort.get_available_providers():
            raise DeviceUnavailable(
                "device 'cuda' was requested but this onnxruntime build has no "
                f"CUDAExecutionProvider (available: {ort.get_available_providers()}); "
                "install onnxruntime-gpu or serve with --device cpu"
            )
        _load_cuda_libraries()
        return CUDA
    raise ValueError(f"unknown device {device!r} (expected 'cpu' or 'cuda')")


@cache
def _load_cuda_libraries() -> None:
    """CUDA and cuDNN loaded before the first CUDA session (`ort.preload_dlls()`): the nvidia-*
    pip packages' copies where they are installed (ahead of a system CUDA), else the system's.
    So a Python environment with CUDA from pip needs no LD_LIBRARY_PATH (the GPU check's
    machine, where the server ran with this). It may print ONNX Runtime's warnings to stdout
    once, as at any CUDA start."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


@dataclass(frozen=True)
class SessionThreads:
    """How a model's two sessions use the CPU's cores.

    `decoder` and `encoder` are intra-op thread counts (0 = ONNX Runtime's default, one per
    core). `spinning`: idle pool threads busy-wait for the next operator. Alone, spinning
    measured 6% faster (docs/benchmarks.md, "Profile"); beside a second session it takes the
    cores that session's threads need (issue 19). `decoder_cpus`, `encoder_cpus`: the physical
    cores each session's pool threads are pinned to, empty = not pinned
    (service/runtime/cores.py).
    """

    decoder: int = 0
    encoder: int = 0
    spinning: bool = True
    decoder_cpus: CpuGroups = ()
    encoder_cpus: CpuGroups = ()


def session_options(
    intra_op_threads: int = 0, spinning: bool = True, cpus: CpuGroups = ()
) -> ort.SessionOptions:
    """Every graph optimisation, sequential execution, a spinning thread pool unless asked,
    its pool threads pinned to `cpus` if given (then `intra_op_threads` must be set).

    Measured on the 2-core CPU (docs/benchmarks.md, "Profile"): one intra-op thread made a
    bart-base request 1.7x slower, no spinning 6% slower; neither the memory arena off, the
    EXTENDED level, nor onnxruntime.transformers' fusions of the exported graphs were faster.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if cpus and intra_op_threads > 1:
        options.add_session_config_entry(
            "session.intra_op_thread_affinities", affinity_entry(intra_op_threads, cpus)
        )
    return options


def create_session(
    path: Path,
    device: str,
    intra_op_threads: int = 0,
    options: ort.SessionOptions | None = None,
    spinning: bool = True,
    cpus: CpuGroups = (),
) -> ort.InferenceSession:
    """A session on `device` (with `session_options()` unless `options` are given); fails loudly
    instead of falling back."""
    provider = provider_for(device)
    options = options or session_options(intra_op_threads, spinning, cpus)
    providers = [provider] if provider == CPU else [provider, CPU]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if session.get_providers()[0] != provider:
        raise DeviceUnavailable(
            f"{path.name}: ONNX Runtime could not start {provider} "
            f"(got {session.get_providers()}); check that a GPU and the NVIDIA driver are "
            "visible (libcuda.so.1; in a container, the NVIDIA container toolkit mounts it) and "
            "the CUDA/cuDNN installation"
        )
    return session
