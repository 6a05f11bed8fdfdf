"""One table of every W4 run under a folder (bench/w4.sh's NAME/{staggered*,at-once}/load.json),
servers side by side, staggered loads first, and each gap's p99 / p50 (the issue's target) to a
tenth of a millisecond, which the table rounds away on a GPU: `python -m bench.w4_table DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import load_table

LOADS = ("staggered*", "at-once")


def w4_table(folder: Path) -> str:
    """The markdown table, then one line per run with its gap p50, p99 and their ratio."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for load in LOADS:
        for path in sorted(folder.glob(f"*/{load}/load.json")):
            for result in json.loads(path.read_text())["results"]:
                rows.append((path.parent.parent.name, result))
    if not rows:
        raise ValueError(f"no */staggered*/load.json or */at-once/load.json under {folder}")
    return load_table(rows) + "\n\n" + "\n".join(_gap_line(server, r) for server, r in rows)


def _gap_line(server: str, result: dict[str, Any]) -> str:
    gaps = result["inter_token_ms"]
    ratio = f"{gaps['p99'] / gaps['p50']:.2f}" if gaps["p50"] > 0 else "n/a"
    return (
        f"- {server}, {result['arrival_interval_s'] or 'at once'}: gap p50 {gaps['p50']:.1f} ms, "
        f"p99 {gaps['p99']:.1f} ms, p99 / p50 {ratio}"
    )


if __name__ == "__main__":
    try:
        print(w4_table(Path(sys.argv[1])))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
