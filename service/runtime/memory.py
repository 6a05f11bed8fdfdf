"""glibc allocator settings that let a long-running server give memory back after a big input.

By default glibc raises its mmap threshold after a large block is freed (up to 32 MiB), so the
next large inputs (a 1 MiB text's copies, a decoded image, a KServe call's elements) come from
heaps it never returns to the system: one big request leaves the process hundreds of MiB larger
for good. A fixed threshold keeps such blocks in mmap, freed at once; fewer arenas bound the
heaps that threads fragment; `release_free_memory` trims what heaps hold free (the server calls
it every second, off the event loop: ctypes releases the GIL). Elsewhere than glibc these are
no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20
ARENA_MAX = 4
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_allocator() -> None:
    """Fixed mmap threshold and a bounded arena count (call once, at start)."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        _LIBC.mallopt(M_ARENA_MAX, ARENA_MAX)


def release_free_memory() -> None:
    """Return the heaps' free memory to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return 0
