"""Writes deploy/observability/prometheusrule.yaml from alert-rules.yaml, or checks it is current.

The alert rules live once, in the plain rules file that Prometheus and promtool read; the
Prometheus Operator needs the same groups inside a PrometheusRule object. The wrapper is that
file's text indented under `spec:` (comments kept), so `--check` is a plain text comparison.

    python deploy/tools/sync_prometheusrule.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OBSERVABILITY = Path(__file__).resolve().parents[1] / "observability"
RULES = OBSERVABILITY / "alert-rules.yaml"
WRAPPER = OBSERVABILITY / "prometheusrule.yaml"

HEADER = """\
# Generated from alert-rules.yaml by deploy/tools/sync_prometheusrule.py: edit that file and
# rerun the script (make lint-deploy fails while the two differ).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: attnserve
  labels:
    # kube-prometheus-stack's default ruleSelector picks rules carrying the release's label.
    release: kube-prometheus-stack
spec:
"""


def wrapped(rules_text: str) -> str:
    """The PrometheusRule text for a rules file: its body (past the leading comment) under spec."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the wrapper is stale")
    args = parser.parse_args(argv)
    expected = wrapped(RULES.read_text())
    if not args.check:
        WRAPPER.write_text(expected)
        return 0
    if WRAPPER.exists() and WRAPPER.read_text() == expected:
        return 0
    print(
        f"{WRAPPER} is out of date with {RULES.name}: run python {Path(__file__).as_posix()}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
