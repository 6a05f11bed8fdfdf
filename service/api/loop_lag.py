"""Measures the event loop's lag: a timer due every interval, observed by how late it runs.

The event loop only moves bytes; anything that blocks it (a long computation on it, the GIL held
by another thread) delays every RPC, health checks included. This is how operators see it:
`attnserve_event_loop_lag_seconds`.
"""

from __future__ import annotations

import asyncio

from service.metrics import ServerMetrics

INTERVAL_S = 0.1


async def watch_event_loop(metrics: ServerMetrics, interval_s: float = INTERVAL_S) -> None:
    """Observe the loop's lag every `interval_s` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.event_loop_lag(max(0.0, loop.time() - due))
