"""Which CPUs the decoder's and the encoder's threads run on, when encoders run beside the steps.

Unpinned, the encoder's threads and the decoder's share every core, and a decode step that runs
beside a long encoder run slows down with it (issue 19). Split, the encoder runs on physical
cores of its own and the decoder's pool threads on the others; the thread that calls the decoder
stays free, so a lone request still decodes on every core. Measured on the 2-core CPU in
docs/benchmarks.md ("Cores split between the encoder and the decoder").

Only the CPUs this process may run on count (`sched_getaffinity`: taskset, a container's
cpuset, Kubernetes' static CPU manager), grouped by physical core (hyperthread siblings stay on
one side). A CPU quota below that many CPUs (a pod's CPU limit without exclusive cores) means
those CPUs are shared with others, and pinning to some of them would crowd onto cores other
processes are using: then nothing is split, and the caller says why.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
SYSFS_CPUS = Path("/sys/devices/system/cpu")
CpuGroups = tuple[tuple[int, ...], ...]  # physical cores, each the CPUs (hardware threads) of one

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreSplit:
    """The physical cores of the decoder's pool threads and of the encoder beside the steps."""

    decoder: CpuGroups
    encoder: CpuGroups


class PinningUnavailable(RuntimeError):
    """The machine gives this process no cores it could pin to (says why)."""


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """This process's CPU limit in CPUs, None if none: the smallest cgroup v2 `cpu.max` from its
    own cgroup up to the root (a parent's limit binds too), else its cgroup v1 CFS quota."""
    if (root / "cgroup.controllers").is_file():  # cgroup v2
        directory, quotas = _own_cgroup(root, proc_cgroup, ""), []
        while True:
            quotas.append(_v2_quota(directory / "cpu.max"))
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
        limits = [quota for quota in quotas if quota is not None]
        return min(limits) if limits else None
    for mount in ("cpu", "cpu,cpuacct"):
        directory = _own_cgroup(root / mount, proc_cgroup, "cpu")
        quota_file, period_file = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota < 0 else quota / int(period_file.read_text())
    return None


def _v2_quota(path: Path) -> float | None:
    if not path.is_file():
        return None
    quota, *period = path.read_text().split()  # "max 100000" or "200000 100000"
    return None if quota == "max" else int(quota) / int(period[0] if period else 100_000)


def _own_cgroup(root: Path, proc_cgroup: Path, controller: str) -> Path:
    """This process's directory under `root` for a cgroup v1 `controller` ("" = cgroup v2)
    from /proc/self/cgroup; `root` itself where that directory is not there (inside a container
    the root usually is the process's own cgroup)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return root
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        unified = hierarchy == "0" and not controllers
        if (unified and not controller) or (controller and controller in controllers.split(",")):
            own = root / path.lstrip("/")
            return own if own.is_dir() else root
    return root


def quota_threads(cpus: list[int], quota: float | None) -> int:
    """Intra-op threads for a process whose CPU quota is below its allowed CPUs (a Kubernetes
    CPU limit without exclusive cores): the quota, rounded up. 0 = no such quota, ONNX Runtime's
    own default (one thread per physical core), which does not read the quota."""
    if quota is None or quota >= len(cpus):
        return 0
    return max(1, math.ceil(quota))


def physical_cores(cpus: list[int], sysfs: Path = SYSFS_CPUS) -> list[tuple[int, ...]]:
    """`cpus` grouped by physical core (hyperthread siblings together, from sysfs' topology),
    in the order of each core's first CPU; a CPU without topology is a core of its own."""
    cores: dict[str, list[int]] = {}
    for cpu in cpus:
        try:
            key = (sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip()
        except OSError:
            key = f"cpu{cpu}"
        cores.setdefault(key, []).append(cpu)
    return [tuple(core) for core in cores.values()]


def plan_split(cpus: list[int], quota: float | None, sysfs: Path = SYSFS_CPUS) -> CoreSplit:
    """The encoder gets the last half of the physical cores, the decoder's pool threads one each
    of the first half (the larger, for an odd count): a decoder step of a few rows stops scaling
    after a few threads, a long encoder run does not. A single physical core is split by its
    hardware threads. Raises PinningUnavailable when fewer than two CPUs are allowed, or when a
    CPU quota shares them with other processes."""
    if len(cpus) < 2:
        raise PinningUnavailable(f"only {len(cpus)} CPU allowed ({cpus}): nothing to split")
    if quota is not None and quota < len(cpus):
        raise PinningUnavailable(
            f"a CPU quota of {quota:g} CPUs over {len(cpus)} allowed CPUs: those CPUs are "
            "shared with other processes (give the pod exclusive cores, e.g. Kubernetes' static "
            "CPU manager, to pin)"
        )
    cores = physical_cores(cpus, sysfs)
    if len(cores) < 2:
        cores = [(cpu,) for cpu in cpus]
    encoder = len(cores) // 2
    return CoreSplit(tuple(cores[: len(cores) - encoder]), tuple(cores[-encoder:]))


def cpus_of(cores: CpuGroups) -> set[int]:
    return {cpu for core in cores for cpu in core}


def affinity_entry(threads: int, cores: CpuGroups) -> str:
    """ONNX Runtime's `session.intra_op_thread_affinities` for a pool of `threads` (the caller
    plus threads - 1 pool threads, which take `cores` in turn, each thread all of its core's
    hardware threads). ONNX Runtime's CPU ids count from 1."""
    pinned = (cores[i % len(cores)] for i in range(threads - 1))
    return ";".join(",".join(str(cpu + 1) for cpu in core) for core in pinned)


def pin_current_thread(cores: CpuGroups) -> None:
    """Run the calling thread only on `cores` (Linux: affinity is per thread). Where those CPUs
    are no longer this process's (a cpuset that shrank since the start), the thread runs
    unpinned and says so, rather than failing every encoder run."""
    if not cores:
        return
    try:
        os.sched_setaffinity(0, cpus_of(cores))
    except OSError as exc:
        log.warning("encoder thread left unpinned: CPUs %s: %s", sorted(cpus_of(cores)), exc)
