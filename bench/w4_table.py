"""One table of every W4 run under a folder (bench/w4.sh's NAME/{staggered*,at-once}/load.json),
servers side by side, staggered loads first, and each gap's p99 / p50 (the issue's target) to a
tenth of a millisecond, which the table rounds away on a GPU: `python -m bench.w4_table DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.report import load_table

LOADS = ("staggered*", "at-once")


def w4_table(folder: Path) -> str:
    rows = []
    for load in LOADS:
        for path in sorted(folder.glob(f"*/{load}/load.json")):
            for result in json.loads(path.read_text())["results"]:
                rows.append((path.parent.parent.name, result))
    if not rows:
        raise SystemExit(f"no */staggered*/load.json or */at-once/load.json under {folder}")
    gaps = [
        f"- {server}, {result['arrival_interval_s'] or 'at once'}: gap p50 "
        f"{result['inter_token_ms']['p50']:.1f} ms, p99 {result['inter_token_ms']['p99']:.1f} "
        f"ms, p99 / p50 {result['inter_token_ms']['p99'] / result['inter_token_ms']['p50']:.2f}"
        for server, result in rows
    ]
    return load_table(rows) + "\n\n" + "\n".join(gaps)


if __name__ == "__main__":
    print(w4_table(Path(sys.argv[1])))
