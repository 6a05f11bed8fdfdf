"""One table of every W4 run under a folder (bench/w4.sh's NAME/{staggered,at-once}/load.json),
servers side by side, staggered loads first: `python -m bench.w4_table bench-out/w4`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.report import load_table

LOADS = ("staggered", "at-once")


def w4_table(folder: Path) -> str:
    rows = []
    for load in LOADS:
        for path in sorted(folder.glob(f"*/{load}/load.json")):
            for result in json.loads(path.read_text())["results"]:
                rows.append((path.parent.parent.name, result))
    if not rows:
        raise SystemExit(f"no */staggered/load.json or */at-once/load.json under {folder}")
    return load_table(rows)


if __name__ == "__main__":
    print(w4_table(Path(sys.argv[1])))
