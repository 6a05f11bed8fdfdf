"""ONNX Runtime session creation: one place that decides providers and thread counts."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

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
        return CUDA
    raise ValueError(f"unknown device {device!r} (expected 'cpu' or 'cuda')")


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """Every graph optimisation, sequential execution, ONNX Runtime's spinning thread pool.

    Measured on the 2-core CPU (docs/benchmarks.md, "Profile"): one intra-op thread made a
    bart-base request 1.7x slower, no spinning 6% slower; neither the memory arena off, the
    EXTENDED level, nor onnxruntime.transformers' fusions of the exported graphs were faster.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def create_session(
    path: Path,
    device: str,
    intra_op_threads: int = 0,
    options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """A session on `device` (with `session_options()` unless `options` are given); fails loudly
    instead of falling back."""
    provider = provider_for(device)
    options = options or session_options(intra_op_threads)
    providers = [provider] if provider == CPU else [provider, CPU]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if session.get_providers()[0] != provider:
        raise DeviceUnavailable(
            f"{path.name}: ONNX Runtime could not start {provider} "
            f"(got {session.get_providers()}); check the CUDA/cuDNN installation"
        )
    return session
