"""A long-running server's heap and CPython's cyclic garbage collector.

A full collection traverses every tracked object while holding the GIL, so every thread's Python
waits for it: the decode steps, the encoder thread, the event loop. Measured under W4 on the
2-core machine (docs/benchmarks.md): 20 full collections in a staggered run, 60 ms each at p50
and 178 ms at worst, over ~57,000 objects that were almost all there since start-up (modules,
gRPC, the models' Python objects). Frozen once the server is loaded, they are not traversed
again (the same run: 1 ms at p50, 70 ms at worst); they are still freed by reference counting
when they go. Only cycles among frozen objects stay: so when a model version loaded before the
freeze is unloaded, the heap is thawed, and frozen again once that version is gone (one full
collection per model swap, at a repository poll, on the event loop).
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect, then move every object alive now out of the collector's reach (gc.freeze);
    returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_heap() -> bool:
    """Put frozen objects back in the collector's reach (gc.unfreeze); whether any were
    frozen."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    return frozen
