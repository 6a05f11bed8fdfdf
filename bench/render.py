"""A suite's JSON result as markdown and as the throughput-vs-p99 plot of each workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.plot import Point, plot_lines
from bench.report import LOAD_HEADER, fmt, load_table, machine_markdown, markdown_table
from service.runtime.tasks import Task


def _generate_row(reference: dict[str, Any]) -> list[str]:
    latency = reference["latency_ms"]
    return [
        "(a) generate(), one at a time",
        "1 client",
        str(reference["requests"]),
        "0",
        fmt(reference["throughput_rps"], 2),
        fmt(reference["tokens_per_s"]),
        fmt(latency["p50"], 0),
        fmt(latency["p95"], 0),
        fmt(latency["p99"], 0),
        *["n/a"] * (len(LOAD_HEADER) - 10),  # no streaming: no TTFT, no gaps
        "1.00",
    ]


def workload_markdown(name: str, workload: dict[str, Any]) -> str:
    spec = workload["spec"]
    out, inp = spec["output_tokens"], spec["input_words"]
    shape = (
        f"{spec['image_size']}x{spec['image_size']} images"
        if spec["task"] == Task.CAPTIONING
        else f"input words {inp['kind']} {inp['low']}..{inp['high']}"
    )
    rows = [(server, r) for server, results in workload["servers"].items() for r in results]
    table = load_table(rows).splitlines()
    generate = "| " + " | ".join(_generate_row(workload["generate"])) + " |"
    return (
        f"### {name}: {spec['model']}, {shape}, new tokens {out['kind']} "
        f"{out['low']}..{out['high']} (forced), greedy\n\n"
        + "\n".join([*table[:2], generate, *table[2:]])
    )


def targets_markdown(targets: list[dict[str, Any]]) -> str:
    rows = []
    for t in targets:
        met = {True: "met", False: "missed", None: "n/a"}[t["met"]]
        rows.append([t["target"], fmt(t["value"], 2), f"{t['limit']:g}", met])
    return markdown_table(["target", "measured", "limit", ""], rows)


def suite_markdown(result: dict[str, Any], plots: dict[str, str]) -> str:
    """The whole result; `plots` maps a workload to its PNG's path relative to the markdown."""
    parts = [
        f"## Suite `{result['suite']}` ({result['elapsed_s'] / 60:.1f} min)",
        machine_markdown(result["machine_before"])
        + "\n- Load average after the run: "
        + ", ".join(f"{v:.2f}" for v in result["machine_after"]["load_average"]),
        "Models (random weights, real shapes): "
        + "; ".join(f"`{k}`: {v}" for k, v in result["models"].items()),
        f"Each load point: {result['settings']['warmup_s']:g} s warm-up, then "
        f"{result['settings']['duration_s']:g} s measured (closed loop).",
        "### Targets\n\n" + targets_markdown(result["targets"]),
    ]
    if "overhead" in result:
        o = result["overhead"]
        parts.append(
            f"Server overhead on {o['workload']} ({o['pairs']} paired runs): in-process engine "
            f"p50 {o['in_process_p50_ms']:.1f} ms, gRPC p50 {o['grpc_p50_ms']:.1f} ms, "
            f"difference p50 {o['overhead_p50_ms']:.1f} ms, p95 {o['overhead_p95_ms']:.1f} ms."
        )
        if o.get("outside_steps_p50_ms") is not None:
            parts.append(
                f"Split of each pair (p50): outside the decode steps "
                f"{o['outside_steps_p50_ms']:.1f} ms (of which transport "
                f"{o['transport_p50_ms']:.1f} ms), step time "
                f"{o['step_time_difference_p50_ms']:+.1f} ms against the in-process steps."
            )
    for name, workload in result["workloads"].items():
        parts.append(workload_markdown(name, workload))
        if name in plots:
            parts.append(f"![{name}: throughput vs p99 latency]({plots[name]})")
    return "\n\n".join(parts) + "\n"


def plot_workload(name: str, workload: dict[str, Any], path: Path) -> bool:
    """Generated tokens/s against p99 latency per server across loads; False if < 2 loads."""
    series = {
        server: [
            Point(r["latency_ms"]["p99"], r["tokens_per_s"], f"{int(r['level'])}")
            for r in results
            if r["latency_ms"]["p99"] is not None
        ]
        for server, results in workload["servers"].items()
    }
    if max((len(points) for points in series.values()), default=0) < 2:
        return False
    reference = workload.get("generate")
    if reference and reference["latency_ms"]["p99"] is not None:
        series["(a) generate()"] = [
            Point(reference["latency_ms"]["p99"], reference["tokens_per_s"], "1")
        ]
    plot_lines(
        series,
        path,
        f"{name}: throughput vs p99 latency (labels: concurrent clients)",
        "p99 latency (ms)",
        "generated tokens/s",
    )
    return True
