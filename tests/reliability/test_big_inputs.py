"""One request must never stall, bloat or fail anyone else: the largest inputs a client can send
(texts at and past --max-input-bytes, a KServe call of the most elements, image bombs just under
the pixel cap) against `attnserve serve` in its own process, as an operator runs it. Health stays
fast while they are processed, oversized ones are refused, and the server's memory comes back.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image

from service.client import AttnserveClient
from tests.integration.models import CAPTIONER
from tests.integration.serve_process import ServeProcess, serve_in_subprocess

MAX_INPUT_BYTES = 1 << 20  # the default
MAX_BATCH_ELEMENTS = 64  # the default
MAX_IMAGE_PIXELS = 40_000_000  # the default
HEALTH_P99_S = 0.1
RSS_RETURN_FRACTION = 0.10
CALL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def served(models_dir: Path) -> ServeProcess:
    with serve_in_subprocess(models_dir, "--max-new-tokens-cap", "8") as running:
        yield running


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def words(size: int) -> str:
    return ("w1 w2 w3 w4 w5 w6 w7 " * (size // 21 + 1))[:size]


def image_bomb() -> bytes:
    """A PNG just under the pixel cap that compresses to almost nothing."""
    side = int(MAX_IMAGE_PIXELS**0.5) - 1
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (255, 255, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def outcome(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    except triton.InferenceServerException as error:
        return getattr(grpc.StatusCode, str(error.status()).split(".")[-1])
    return grpc.StatusCode.OK


def big_requests(target: str) -> list[Callable[[], grpc.StatusCode]]:
    """The largest inputs of both APIs, and some past the caps."""
    client = AttnserveClient(target)
    kserve = triton.InferenceServerClient(target)

    def summarize(text: str, **params: int) -> Callable[[], grpc.StatusCode]:
        return lambda: outcome(
            lambda: client.summarize(text, max_new_tokens=4, timeout=CALL_TIMEOUT_S, **params)
        )

    def kserve_call(elements: int, size: int) -> Callable[[], grpc.StatusCode]:
        def call() -> None:
            texts = np.array([words(size).encode()] * elements, dtype=np.object_)
            tensor = triton.InferInput("text", [elements], "BYTES")
            tensor.set_data_from_numpy(texts)
            kserve.infer(
                "tiny-summarizer",
                [tensor],
                parameters={"max_new_tokens": 2, "truncate": 16},
                client_timeout=CALL_TIMEOUT_S,
            )

        return lambda: outcome(call)

    bomb = image_bomb()
    caption = lambda: outcome(  # noqa: E731
        lambda: client.caption(bomb, model=CAPTIONER, max_new_tokens=2, timeout=CALL_TIMEOUT_S)
    )
    return [
        summarize(words(MAX_INPUT_BYTES)),  # at the cap, far over the model: refused
        summarize(words(MAX_INPUT_BYTES), truncate=16),  # at the cap, truncated: served
        summarize("a" * MAX_INPUT_BYTES, truncate=16),  # one 1 MiB word
        summarize(words(20 * MAX_INPUT_BYTES)),  # 20 MiB: refused before any work
        kserve_call(MAX_BATCH_ELEMENTS, 1000),  # the most elements
        kserve_call(8, MAX_INPUT_BYTES),  # 8 MiB in one call
        kserve_call(MAX_BATCH_ELEMENTS + 1, 10),  # one element too many
        caption,
        caption,
    ]


EXPECTED = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OK,
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OK,
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OK,
    grpc.StatusCode.OK,
]


PROBE = """
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    print("ready", flush=True)
    while sys.stdin.readline():
        started = time.perf_counter()
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        print(time.perf_counter() - started, flush=True)
"""


@pytest.mark.slow  # a latency bound: meaningful on a quiet machine (`make test-slow`)
def test_health_answers_fast_while_the_largest_inputs_are_processed(served: ServeProcess):
    """Health is checked from its own process (as the kubelet does), so the clients' own work
    in this process does not count against the server."""
    requests = big_requests(served.target)
    latencies: list[float] = []
    done = threading.Event()
    prober = subprocess.Popen(
        [sys.executable, "-c", PROBE, served.target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert prober.stdin is not None and prober.stdout is not None
    assert prober.stdout.readline().strip() == "ready"

    def probe() -> None:
        while not done.is_set():
            prober.stdin.write("check\n")
            prober.stdin.flush()
            latencies.append(float(prober.stdout.readline()))
            time.sleep(0.02)

    probing = threading.Thread(target=probe)
    probing.start()
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            codes = list(pool.map(lambda call: call(), requests))
    finally:
        done.set()
        probing.join()
        prober.stdin.close()
        prober.wait(timeout=30)
    assert codes == EXPECTED
    p99 = float(np.percentile(latencies, 99))
    worst = max(latencies) * 1000
    print(f"health p99 {p99 * 1000:.1f} ms, max {worst:.1f} ms, {len(latencies)} checks")
    assert len(latencies) >= 20 and p99 <= HEALTH_P99_S


def test_memory_returns_after_each_big_request(served: ServeProcess):
    pid = served.process.pid
    requests = big_requests(served.target)
    for call in requests:  # warm: pools, arenas and sessions reach their working size
        call()
    time.sleep(1)
    for index, call in enumerate(requests):
        before = resident_mib(pid)
        call()
        time.sleep(1.5)  # the server trims its heaps every second
        after = resident_mib(pid)
        print(f"request {index}: RSS {before:.0f} -> {after:.0f} MiB")
        assert after <= before * (1 + RSS_RETURN_FRACTION), f"request {index}"
