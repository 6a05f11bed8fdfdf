"""Ask the kernel to run a training process in long time slices.

Beside other busy work the build's two training processes take turns on the cores (in one
session, as before own_session.py, they shared one core beside another session's busy loop).
The scheduler switches between them every few milliseconds, and each switch leaves the next
one's weights and activations out of the core's caches: measured on a 2-core AMD EPYC host, a
training step cost 10-16% more CPU than on a core of its own, and a whole build beside a busy
loop 1.08x the CPU.

Since Linux 6.12 a process may suggest its slice length (`sched_attr.sched_runtime` for the
normal policy, clamped by the kernel to 0.1-100 ms; no privilege needed). With 50 ms the two
trainings' shared steps cost what they cost alone, and the build beside the busy loop took 0.92x
the time (measured side by side, docs/demo-models.md#build-time).
A slice changes when the process runs, never what it computes, so the weights stay the same;
and a waking task with a shorter slice still preempts it, so interactive work beside the build
keeps its latency. Anywhere the call is unknown or refused (another OS, an older kernel, a
seccomp profile) nothing changes.
"""

from __future__ import annotations

import ctypes
import platform
import sys

LONG_SLICE_NS = 50_000_000  # 50 ms: a training step of either demo model is 80-130 ms
MIN_SLICE_NS, MAX_SLICE_NS = 100_000, 100_000_000  # what the kernel clamps a suggestion to

# sched_setattr / sched_getattr system call numbers (glibc has no wrappers)
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
_NORMAL_POLICIES = (0, 3)  # SCHED_OTHER, SCHED_BATCH
_RESET_ON_FORK = 0x01  # the one flag of a normal policy: kept as it was


class _SchedAttr(ctypes.Structure):
    """`struct sched_attr` as of Linux 3.14 (SCHED_ATTR_SIZE_VER0, 48 bytes)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def request_long_time_slices(slice_ns: int = LONG_SLICE_NS) -> int | None:
    """Suggest `slice_ns` as the calling thread's time slice, keeping its policy and nice value;
    the slice the kernel now reports (ns), or None where it cannot be asked or did not take it.
    0 asks nothing."""
    numbers = _SYSCALLS.get(platform.machine())
    if not slice_ns or sys.platform != "linux" or numbers is None:  # macOS has x86_64 too
        return None
    set_number, get_number = numbers
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _SchedAttr()
    size = ctypes.sizeof(attr)
    if libc.syscall(get_number, 0, ctypes.byref(attr), size, 0) != 0:
        return None
    if attr.sched_policy not in _NORMAL_POLICIES:
        return None  # idle or real-time: not ours to change
    attr.size, attr.sched_runtime = size, slice_ns
    attr.sched_flags &= _RESET_ON_FORK
    if libc.syscall(set_number, 0, ctypes.byref(attr), 0) != 0:
        return None
    granted = _SchedAttr()
    if libc.syscall(get_number, 0, ctypes.byref(granted), size, 0) != 0:
        return None
    return granted.sched_runtime or None
