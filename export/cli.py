"""`attnserve export` and `attnserve demo build`: their arguments, and the export run that turns
its errors into a message and an exit code."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from export.demo.time_slices import LONG_SLICE_NS, MAX_SLICE_NS, MIN_SLICE_NS
from export.errors import ExportError
from service.runtime.tasks import Task


def add_export_command(sub: argparse._SubParsersAction) -> None:
    """`attnserve export` (registered in pyproject.toml's attnserve.commands)."""
    p = sub.add_parser("export", help="export a Hugging Face checkpoint to an attnserve model dir")
    p.add_argument("--model", required=True, help="hub id or local checkpoint directory")
    p.add_argument("--task", required=True, choices=list(Task))
    p.add_argument("--output", required=True, help="model directory to create")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--name", default=None, help="model name served (default: output dir name)")
    p.add_argument("--version", default="1", help="model version served")
    p.add_argument(
        "--allow-mismatch", action="store_true", help="write the model even if parity fails"
    )
    p.add_argument(
        "--attention-layers",
        default=None,
        help="decoder layers (0-based, comma-separated, e.g. 0,2) whose cross-attention the "
        "cross_attention output averages (default: all)",
    )
    p.set_defaults(run=run_export)


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    """`attnserve demo build` (registered in pyproject.toml's attnserve.commands)."""
    p = sub.add_parser("demo", help="offline demo models")
    demo_sub = p.add_subparsers(dest="demo_command", required=True)
    b = demo_sub.add_parser("build", help="train and export the two demo models")
    b.add_argument("--output", default="models", help="directory to hold the model dirs")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    b.add_argument(
        "--time-slice-ms",
        type=_time_slice_ms,
        default=LONG_SLICE_NS / 1e6,
        help="time slice each training process asks Linux 6.12+ for, 0.1-100 ms; 0 leaves the "
        "kernel's default (default: %(default)s, see docs/demo-models.md#build-time)",
    )
    b.add_argument(
        "--own-sessions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each training process in a session of its own, so Linux shares the CPU with other "
        "sessions' work per process rather than per session (see docs/demo-models.md#build-time)",
    )
    b.set_defaults(run=_run_demo_build)


def _time_slice_ms(text: str) -> float:
    value = float(text)
    if value != 0 and not MIN_SLICE_NS / 1e6 <= value <= MAX_SLICE_NS / 1e6:
        raise argparse.ArgumentTypeError(f"{text}: 0 (the kernel's default) or 0.1 to 100 ms")
    return value


def _run_demo_build(args: argparse.Namespace) -> int:
    from export.demo.build import run_demo_build

    return run_demo_build(args)


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (docker stop, systemd, a CI timeout, a closed terminal), raised as
    Ctrl-C is, so the staging directory is removed on the way out as it is then."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def run_export(args: argparse.Namespace) -> int:
    """0 on success; 1 with a one-line reason (no traceback) when the export fails; 130 after
    Ctrl-C, 128 + the signal's number after SIGTERM or SIGHUP, nothing written."""
    from export.exporter import export_model

    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(stop) is signal.SIG_DFL:  # not under nohup, which ignores SIGHUP
                signal.signal(stop, _raise_stopped)
    try:
        layers = parse_layers(args.attention_layers)
        manifest = export_model(
            args.model,
            args.task,
            Path(args.output),
            dtype=args.dtype,
            opset=args.opset,
            name=args.name,
            version=args.version,
            allow_mismatch=args.allow_mismatch,
            attention_layers=layers,
            progress=lambda message: print(f"[export] {message}", flush=True),
        )
    except (ExportError, OSError) as exc:  # OSError: an output path that cannot be written
        print(f"attnserve export: error: {exc}", file=sys.stderr)
        return 1
    except _Stopped as stopped:  # the staging directory is removed on the way out
        print(f"attnserve export: stopped ({stopped}); nothing was written", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print("attnserve export: interrupted; nothing was written", file=sys.stderr)
        return 130
    status = "passed" if manifest.parity.get("passed") else "FAILED (written: --allow-mismatch)"
    print(f"[export] {manifest.architecture} {manifest.dtype} {manifest.name!r}: parity {status}")
    return 0


def parse_layers(text: str | None) -> list[int] | None:
    """`--attention-layers 0,2` -> [0, 2]; None (the flag left out) -> None, all layers."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ExportError(
            f"--attention-layers takes comma-separated layer numbers (e.g. 0,2), got {text!r}"
        ) from None
