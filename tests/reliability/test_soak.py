"""A soak of thousands of mixed requests (served, streamed, refused, cancelled, timed out): the
process's resident memory and open file descriptors do not grow. Slow: `make test-slow`.
The figures are printed (run with -s; docs/reliability.md quotes them)."""

from __future__ import annotations

import gc
import io
import itertools
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from PIL import Image

from service.client import AttnserveClient
from tests.fixtures.inprocess_server import serving
from tests.integration.models import CAPTIONER, TEXT, wait_until

WARM_UP_REQUESTS = 400  # caches, arenas and thread pools reach their working size
SOAK_REQUESTS = 4000
CLIENTS = 4
RSS_GROWTH_BOUND_MIB = 32
FD_GROWTH_BOUND = 8


def resident_mib() -> float:
    """This process's resident memory (the server runs in it, beside the clients)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def request_kinds(client: AttnserveClient) -> list[Callable[[], object]]:
    """One of each way a request can end: served, streamed, refused, cancelled, timed out."""
    image = png()

    def cancelled_stream() -> None:
        stream = client.summarize_stream(TEXT, max_new_tokens=64, min_new_tokens=64, timeout=30)
        next(stream)
        stream.cancel()
        list(stream)  # raises the CANCELLED the client sees

    return [
        lambda: client.summarize(TEXT, max_new_tokens=8, timeout=30),
        lambda: list(client.summarize_stream(TEXT, max_new_tokens=8, timeout=30)),
        lambda: client.caption(image, model=CAPTIONER, max_new_tokens=6, timeout=30),
        lambda: client.caption(b"not an image", timeout=30),
        lambda: client.summarize(TEXT, model="no-such-model", timeout=30),
        lambda: client.summarize(TEXT, num_beams=2, max_new_tokens=8, timeout=30),
        cancelled_stream,
        lambda: client.summarize(TEXT, max_new_tokens=64, min_new_tokens=64, timeout=0.005),
    ]


def run_requests(client: AttnserveClient, count: int) -> Counter[str]:
    """`count` requests cycling through every kind, from CLIENTS threads; the codes they got."""
    kinds = itertools.cycle(request_kinds(client))
    calls = [next(kinds) for _ in range(count)]

    def code_of(call: Callable[[], object]) -> str:
        try:
            call()
        except grpc.RpcError as error:
            return error.code().name
        return "OK"

    with ThreadPoolExecutor(CLIENTS) as pool:
        return Counter(pool.map(code_of, calls))


@pytest.mark.slow
def test_a_soak_of_thousands_of_requests_grows_neither_memory_nor_open_files(models_dir: Path):
    with serving(models_dir, max_num_beams=2) as server, AttnserveClient(server.target) as client:
        run_requests(client, WARM_UP_REQUESTS)
        gc.collect()
        rss_before, fds_before = resident_mib(), open_fds()
        codes = run_requests(client, SOAK_REQUESTS)
        gc.collect()
        rss_after, fds_after = resident_mib(), open_fds()
        engine = server.engine
        # a request the client gave up on leaves at the engine's next step
        wait_until(lambda: engine.queue_length() == 0 and engine.running_rows() == 0, what="idle")

    print(
        f"\nsoak: {SOAK_REQUESTS} requests after {WARM_UP_REQUESTS} to warm up; codes "
        f"{dict(codes)}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB; "
        f"open fds {fds_before} -> {fds_after}"
    )
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED"} <= set(codes)
    assert rss_after - rss_before < RSS_GROWTH_BOUND_MIB
    assert fds_after - fds_before <= FD_GROWTH_BOUND
