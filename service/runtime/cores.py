"""Which CPUs the decoder's and the encoder's threads run on, when encoders run beside the steps.

Unpinned, the encoder's threads and the decoder's share every core, and a decode step that
lands beside a long encoder run waits for it (issue 19). Pinned, the encoder runs on cores of
its own and the decoder's pool threads on the others; the thread that calls the decoder stays
free, so a lone request still decodes on every core. Measured on the 2-core CPU in
docs/benchmarks.md ("Cores split between the encoder and the decoder").

Only the CPUs this process may run on count (`sched_getaffinity`: taskset, a container's
cpuset, Kubernetes' static CPU manager). A CPU quota below that many CPUs (a pod's CPU limit
without exclusive cores) means those CPUs are shared with others, and pinning to some of them
would crowd onto cores other processes are using: the plan then says why it does not pin.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CorePlan:
    """Thread counts and CPUs of a model's two sessions; empty CPU tuples = not pinned."""

    decoder_threads: int
    encoder_threads: int
    decoder_cpus: tuple[int, ...] = ()
    encoder_cpus: tuple[int, ...] = ()


class PinningUnavailable(RuntimeError):
    """The machine gives this process no cores it could pin to (says why)."""


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """This process's CPU limit in CPUs (cgroup v2 `cpu.max`, else v1 CFS quota), None if none."""
    v2 = _own_cgroup_v2(root) / "cpu.max"
    if v2.is_file():
        quota, *period = v2.read_text().split()  # "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period[0] if period else 100_000)
    v1_quota, v1_period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if v1_quota.is_file() and v1_period.is_file():
        quota = int(v1_quota.read_text())
        return None if quota < 0 else quota / int(v1_period.read_text())
    return None


def _own_cgroup_v2(root: Path) -> Path:
    """This process's cgroup v2 directory (inside a container, usually the root itself)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = root / line[3:].lstrip("/")
                if own.is_dir():
                    return own
    except OSError:
        pass
    return root


def quota_threads(cpus: list[int], quota: float | None) -> int:
    """Intra-op threads for a process whose CPU quota is below its allowed CPUs (a Kubernetes
    CPU limit without exclusive cores): the quota, rounded up. 0 = no such quota, ONNX Runtime's
    own default (one thread per physical core), which does not read the quota."""
    if quota is None or quota >= len(cpus):
        return 0
    return max(1, math.ceil(quota))


def plan_split(cpus: list[int], quota: float | None) -> CorePlan:
    """The encoder gets the last half of `cpus`, the decoder's pool threads one each of the
    first half (the larger, for an odd count), plus its calling thread unpinned: a decoder step
    of a few rows stops scaling after a few threads, a long encoder run does not. Raises
    PinningUnavailable when fewer than two CPUs are allowed, or when a CPU quota shares them
    with other processes."""
    if len(cpus) < 2:
        raise PinningUnavailable(f"only {len(cpus)} CPU allowed ({cpus}): nothing to split")
    if quota is not None and quota < len(cpus):
        raise PinningUnavailable(
            f"a CPU quota of {quota:g} CPUs over {len(cpus)} allowed CPUs: those CPUs are "
            "shared with other processes (give the pod exclusive cores, e.g. Kubernetes' static "
            "CPU manager, to pin)"
        )
    encoder = tuple(cpus[-(len(cpus) // 2) :])
    decoder = tuple(cpus[: len(cpus) - len(encoder)])
    return CorePlan(len(decoder) + 1, len(encoder), decoder, encoder)


def affinity_entry(threads: int, cpus: tuple[int, ...]) -> str:
    """ONNX Runtime's `session.intra_op_thread_affinities` for a pool of `threads` (the caller
    plus threads - 1 pool threads, which take `cpus` in turn). Its CPU ids count from 1."""
    return ";".join(str(cpus[i % len(cpus)] + 1) for i in range(threads - 1))


def pin_current_thread(cpus: tuple[int, ...]) -> None:
    """Run the calling thread only on `cpus` (Linux: affinity is per thread)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
