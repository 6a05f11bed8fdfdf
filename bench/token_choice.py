"""Greedy token choice on the host (numpy) against the argmax graph, per step, on one device.

    python -m bench.token_choice [--device cpu|cuda] [--vocab 50265] [--rows 1,8,32]

The host path is what the runner does without --device-argmax: the last position's logits
as float32 (on CUDA: copied from the device), `process_logits`, argmax. The graph path is
service.runtime.token_choice with no host rows. Both keep EOS out, as the benchmark
workloads do (their lengths are forced with a minimum length). Whether `auto` turns the graph
on for a device is decided from this table (docs/benchmarks.md, "Token choice on the device").
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

from service.engine.decoding import RowParams, process_logits
from service.engine.validation import ResolvedParams
from service.runtime.step_counters import StepCounters
from service.runtime.token_choice import DeviceArgmax

REPEATS = 200
# greedy with a minimum length, every other logits processor off
GREEDY = ResolvedParams.greedy(max_length=64, min_length=64)


def _median_ms(call) -> float:
    call()  # warm-up
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def measure(device: str, vocab: int, rows: int) -> dict[str, float]:
    logits = np.random.default_rng(rows).normal(size=(rows, 1, vocab)).astype(np.float32)
    on_device = ort.OrtValue.ortvalue_from_numpy(logits, device, 0)
    params = RowParams.for_request(GREEDY, rows)
    sequences, lengths = np.zeros((rows, 64), np.int64), np.full(rows, 8)
    eos, no_rows = np.array([2]), np.zeros(0, np.int64)
    bans = params.min_length_bans(lengths, eos)
    graph = DeviceArgmax("tensor(float)", device, 0, StepCounters())

    def host() -> np.ndarray:
        last = np.asarray(on_device.numpy()[:, -1, :], np.float32)
        return np.argmax(process_logits(last, sequences, lengths, params, eos), axis=1)

    def on_graph() -> np.ndarray:
        return graph.run(on_device, no_rows, bans)[0]

    assert np.array_equal(host(), on_graph())
    return {"rows": rows, "host_ms": _median_ms(host), "graph_ms": _median_ms(on_graph)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--vocab", type=int, default=50265)
    parser.add_argument("--rows", default="1,8,32")
    args = parser.parse_args()
    for rows in (int(r) for r in args.rows.split(",")):
        print(json.dumps({"device": args.device, **measure(args.device, args.vocab, rows)}))


if __name__ == "__main__":
    main()
