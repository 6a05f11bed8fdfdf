"""Background upkeep of the server's event loop: its lag is measured (a timer due every interval,
observed by how late it runs), and the allocator's free memory is returned every second.

The event loop only moves bytes; anything that blocks it (a long computation on it, the GIL held
by another thread) delays every RPC, health checks included. This is how operators see it:
`attnserve_event_loop_lag_seconds`.
"""

from __future__ import annotations

import asyncio
import gc

from service.metrics import ServerMetrics
from service.runtime.memory import release_free_memory, resident_bytes

INTERVAL_S = 0.1
TRIM_EVERY_S = 1.0
COLLECT_AFTER_GROWTH_BYTES = 16 << 20


async def watch_event_loop(metrics: ServerMetrics, interval_s: float = INTERVAL_S) -> None:
    """Observe the loop's lag every `interval_s` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.event_loop_lag(max(0.0, loop.time() - due))


async def release_memory_periodically(interval_s: float = TRIM_EVERY_S) -> None:
    """Give memory back to the system every `interval_s`, so that RSS after a big request
    returns to its level before it, until cancelled.

    Garbage in reference cycles (exceptions and their frames) is freed only when the cyclic
    collector runs, which a quiet server may not do for a long time; so a full collection runs
    when the resident size has grown by
    COLLECT_AFTER_GROWTH_BYTES over its lowest level since the last collection (rare, at most
    once per interval); then the allocator's free memory is returned.
    """
    baseline = resident_bytes()
    while True:
        await asyncio.sleep(interval_s)
        grown = resident_bytes() - baseline > COLLECT_AFTER_GROWTH_BYTES
        if grown:
            gc.collect()
        await asyncio.to_thread(release_free_memory)
        # The lowest level since the last collection; what a collection leaves is the new one.
        baseline = resident_bytes() if grown else min(baseline, resident_bytes())
