"""`attnserve bench load` (drive a running server), `attnserve bench suite` (every baseline,
side by side), `overhead` (gRPC against the in-process engine), `profile` (one request's time,
split) and `explain` (attribution's cost): arguments in, JSON + markdown (+ PNG plot) out."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc

from bench.driver import LoadDriver, LoadSpec
from bench.render import plot_workload, suite_markdown
from bench.report import load_table, machine_info, write_json
from bench.scrape import decode_batch_probe
from bench.stats import summarize
from bench.workload import load_workload, make_requests
from service.client import AttnserveClient

PREFLIGHT_TIMEOUT_S = 10.0
REQUEST_POOL = 256


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """`attnserve bench` (registered in pyproject.toml's attnserve.commands)."""
    p = sub.add_parser("bench", help="load-test a server; compare baselines")
    p.set_defaults(run=run_bench)
    _add_bench_arguments(p)


def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The `attnserve bench` subcommands and their flags."""
    sub = p.add_subparsers(dest="bench_command", required=True)
    load = sub.add_parser("load", help="drive a running server with one workload")
    load.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    load.add_argument("--workload", required=True, help="a named workload or a JSON spec file")
    load.add_argument("--model", default=None, help="served model (default: the workload's)")
    load.add_argument("--mode", choices=["closed", "open"], default="closed")
    load.add_argument(
        "--levels", default="1", help="comma-separated clients (closed) or requests/s (open)"
    )
    length = load.add_mutually_exclusive_group(required=True)
    length.add_argument("--duration", type=float, help="seconds measured per level")
    length.add_argument("--requests", type=int, help="requests measured per level")
    load.add_argument(
        "--arrival-interval",
        type=float,
        default=0.0,
        help="closed loop: send one request every this many seconds at the earliest "
        "(staggered arrivals; 0 = all at once)",
    )
    load.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up per level")
    load.add_argument("--metrics-url", default=None, help="the server's /metrics URL")
    load.add_argument("--out", default="bench-out/load", help="directory for the results")
    suite = sub.add_parser("suite", help="all baselines on the benchmark models, side by side")
    suite.add_argument("--plan", choices=["full", "quick"], default="full")
    suite.add_argument("--out", default="bench-out", help="models cache and results directory")
    overhead = sub.add_parser("overhead", help="gRPC + scheduling cost against the engine")
    overhead.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    overhead.add_argument("--model-dir", required=True, help="the served model's directory")
    overhead.add_argument("--workload", default="W1", help="a named workload or a JSON spec file")
    overhead.add_argument("--pairs", type=int, default=10, help="timed (in-process, gRPC) pairs")
    overhead.add_argument("--metrics-url", default=None, help="the server's /metrics URL")
    overhead.add_argument("--out", default="bench-out/overhead", help="directory for the results")
    profile = sub.add_parser("profile", help="one request's time split, in-process (CPU)")
    profile.add_argument("--model-dir", required=True, help="an exported model directory")
    profile.add_argument("--workload", default="W1", help="a named workload or a JSON spec file")
    profile.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    profile.add_argument("--out", default="bench-out/profile", help="directory for the results")
    single = sub.add_parser("single", help="one request at a time: engine vs generate() (W1)")
    single.add_argument("--checkpoint", required=True, help="the checkpoint the models came from")
    single.add_argument(
        "--model-dir",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="an exported model directory to time, e.g. fp32=bench-out/served/bart-base/bart-base",
    )
    single.add_argument("--workload", default="W1", help="a named workload or a JSON spec file")
    single.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up")
    single.add_argument(
        "--optimum-python", default=None, help="the Optimum side environment's python (optional)"
    )
    single.add_argument("--out", default="bench-out/single", help="directory for the results")
    explain = sub.add_parser("explain", help="the cost of per-token attribution, in-process")
    explain.add_argument("--model-dir", required=True, help="an exported model directory")
    explain.add_argument("--workload", default="W1", help="a named workload or a JSON spec file")
    explain.add_argument("--concurrent", default="1,8", help="comma-separated batch sizes")
    explain.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    explain.add_argument("--out", default="bench-out/explain", help="directory for the results")


def _levels(raw: str) -> list[float]:
    try:
        levels = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--levels must be numbers separated by commas, got {raw!r}") from None
    if not levels:
        raise ValueError("--levels is empty")
    return levels


def _check_model(target: str, model: str, task: str) -> None:
    """Fail early, with a message, if the server is down or does not serve `model`."""
    with AttnserveClient(target) as client:
        served = client.list_models(task=task, timeout=PREFLIGHT_TIMEOUT_S)
    names = sorted(m.name for m in served)
    if model not in names:
        raise ValueError(f"{target} serves no {task} model {model!r} (it serves: {names})")


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    spec = load_workload(args.workload)
    model = args.model or spec.model
    levels = _levels(args.levels)
    loads = [
        LoadSpec(
            args.mode,
            level,
            args.warmup,
            args.duration,
            args.requests,
            arrival_interval_s=args.arrival_interval,
        )
        for level in levels
    ]
    for load in loads:
        load.validate()
    _check_model(args.target, model, spec.task)
    spec = replace(spec, model=model)
    driver = LoadDriver(args.target, spec.task, model, make_requests(spec, REQUEST_POOL))
    probe = decode_batch_probe(args.metrics_url, model) if args.metrics_url else None
    results = []
    for load in loads:
        results.append(summarize(asyncio.run(driver.run(load, probe))).to_dict())
        print(load_table([(args.target, results[-1])]).splitlines()[-1], flush=True)
    return {
        "machine": machine_info(),
        "target": args.target,
        "workload": spec.to_dict(),
        "results": results,
    }


def _write_load(result: dict[str, Any], out: Path) -> None:
    write_json(result, out / "load.json")
    table = load_table([(result["target"], r) for r in result["results"]])
    (out / "load.md").write_text(table + "\n")
    workload = {"spec": result["workload"], "servers": {result["target"]: result["results"]}}
    plot_workload(result["workload"]["name"], workload, out / "load.png")
    print(f"wrote {out}/load.json, load.md" + (", load.png" if (out / "load.png").exists() else ""))


def run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from bench.overhead import measure_overhead  # imports onnxruntime

    if args.pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {args.pairs}")
    spec = load_workload(args.workload)
    request = make_requests(spec, 1)[0]
    overhead = measure_overhead(
        Path(args.model_dir), args.target, request, args.pairs, metrics_url=args.metrics_url
    )
    return {
        "machine": machine_info(),
        "target": args.target,
        "workload": spec.to_dict(),
        "overhead": asdict(overhead),
    }


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    from bench.profile import profile_request  # imports onnxruntime

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    spec = load_workload(args.workload)
    request = make_requests(spec, 1)[0]
    profile = profile_request(Path(args.model_dir), request, args.repeats, Path(args.out))
    return {"machine": machine_info(), "workload": spec.to_dict(), "profile": profile.to_dict()}


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    from bench.single import measure_single_requests, to_dict  # imports torch

    model_dirs = {}
    for entry in args.model_dir:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model-dir must be NAME=DIR, got {entry!r}")
        model_dirs[name] = Path(path)
    spec = load_workload(args.workload)
    requests = make_requests(spec, max(args.repeats, 1))
    result = measure_single_requests(
        Path(args.checkpoint), model_dirs, requests, args.repeats, args.optimum_python
    )
    return {"machine": machine_info(), "workload": spec.to_dict(), "result": to_dict(result)}


def run_explain(args: argparse.Namespace) -> dict[str, Any]:
    from bench.explain_cost import measure_explain_cost, to_dict  # imports onnx

    spec = load_workload(args.workload)
    levels = [int(level) for level in _levels(args.concurrent)]
    results = []
    for level in levels:
        results.append(measure_explain_cost(Path(args.model_dir), spec, level, args.repeats))
        print(f"{level} concurrent: {results[-1].median_s}", flush=True)
    return {
        "machine": machine_info(),
        "model_dir": args.model_dir,
        "workload": spec.to_dict(),
        "results": [to_dict(result) for result in results],
    }


def _write_explain(result: dict[str, Any], out: Path) -> None:
    from bench.explain_cost import ExplainCost, explain_cost_table

    write_json(result, out / "explain.json")
    table = explain_cost_table([ExplainCost(**r) for r in result["results"]])
    (out / "explain.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out}/explain.json, explain.md")


def _write_suite(result: dict[str, Any], out: Path) -> None:
    results = out / "results"
    write_json(result, results / f"suite-{result['suite']}.json")
    plots = {}
    for name, workload in result["workloads"].items():
        png = results / f"{result['suite']}-{name}-throughput-p99.png"
        if plot_workload(name, workload, png):
            plots[name] = png.name
    markdown = suite_markdown(result, plots)
    (results / f"suite-{result['suite']}.md").write_text(markdown)
    print(markdown)
    print(f"wrote {results}/suite-{result['suite']}.json, .md and plots")


def run_bench(args: argparse.Namespace) -> int:
    """0 on success; 2 for bad arguments or workload specs; 1 if the server cannot be used."""
    out = Path(args.out)
    try:
        if args.bench_command == "load":
            _write_load(run_load(args), out)
        elif args.bench_command == "overhead":
            result = run_overhead(args)
            write_json(result, out / "overhead.json")
            print(json.dumps(result["overhead"], indent=2))
        elif args.bench_command == "profile":
            from bench.profile import RequestProfile, profile_markdown

            result = run_profile(args)
            write_json(result, out / "profile.json")
            print(profile_markdown(RequestProfile(**result["profile"])))
        elif args.bench_command == "single":
            from bench.single import SingleRequestResult, single_table

            result = run_single(args)
            write_json(result, out / "single.json")
            table = single_table(SingleRequestResult(**result["result"]))
            (out / "single.md").write_text(table + "\n")
            print(table)
        elif args.bench_command == "explain":
            _write_explain(run_explain(args), out)
        else:
            from bench.suite import PLANS, run_suite  # imports the exporter

            _write_suite(run_suite(PLANS[args.plan], out), out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"error: cannot use the server: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a suite server that did not start
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.cli load ...` = `attnserve bench load ...`, for a checkout that is not
    installed (the lent GPU machine: no venv, so no entry points)."""
    parser = argparse.ArgumentParser(prog="python -m bench.cli", description="attnserve bench")
    _add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
