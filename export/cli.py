"""`attnserve export`: runs the exporter and turns its errors into a message and an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.errors import ExportError


def run_export(args: argparse.Namespace) -> int:
    """0 on success; 1 with a one-line reason (no traceback) when the export fails."""
    from export.exporter import export_model

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
    except ExportError as exc:
        print(f"attnserve export: error: {exc}", file=sys.stderr)
        return 1
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
