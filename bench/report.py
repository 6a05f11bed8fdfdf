"""Benchmark output: the machine's description, JSON files, and markdown tables.

Tables are made from the JSON form of the results (plain dicts), so a saved result file can be
rendered again without re-running anything.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

PACKAGES = ("attnserve", "onnxruntime", "grpcio", "numpy", "torch", "transformers")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kib = int(meminfo.read_text().split()[1])
        memory_gib = round(total_kib / (1 << 20), 1)
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average": list(os.getloadavg()),
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


LOAD_HEADER = [
    "server",
    "load",
    "requests",
    "errors",
    "req/s",
    "tokens/s",
    "latency p50 ms",
    "p95 ms",
    "p99 ms",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "TTFT p99 ms",
    "gap p50 ms",
    "gap p90 ms",
    "gap p99 ms",
    "gap max ms",
    "mean decode batch",
]


def load_row(server: str, result: dict[str, Any]) -> list[str]:
    """One LoadResult (as a dict) as a table row."""
    level = result["level"]
    load = f"{int(level)} clients" if result["mode"] == "closed" else f"{level:g} req/s Poisson"
    if result.get("arrival_interval_s"):
        load = f"{int(level)} in flight, 1 per {result['arrival_interval_s']:g} s"
    latency, ttft = result["latency_ms"], result["ttft_ms"]
    gap = result.get("inter_token_ms") or {}  # results saved before the field existed
    return [
        server,
        load,
        str(result["requests"]),
        str(sum(result["errors"].values())),
        fmt(result["throughput_rps"], 2),
        fmt(result["tokens_per_s"]),
        fmt(latency["p50"], 0),
        fmt(latency["p95"], 0),
        fmt(latency["p99"], 0),
        fmt(ttft["p50"], 0),
        fmt(ttft.get("p95"), 0),
        fmt(ttft["p99"], 0),
        *(fmt(gap.get(key), 0) for key in ("p50", "p90", "p99", "max")),
        fmt(result["mean_decode_batch"], 2),
    ]


def load_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    return markdown_table(LOAD_HEADER, [load_row(server, result) for server, result in rows])


def machine_markdown(machine: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    load = ", ".join(f"{v:.2f}" for v in machine["load_average"])
    return (
        f"- CPU: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB memory\n"
        f"- OS: {machine['os']}, Python {machine['python']}\n"
        f"- Packages: {packages}\n"
        f"- Load average (1, 5, 15 min) at the start: {load}"
    )
