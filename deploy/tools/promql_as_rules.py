"""Prints every PromQL query of the Grafana dashboard and the prometheus-adapter rules as a
Prometheus recording-rules file, so that `promtool check rules` parses each one.

Neither Grafana nor prometheus-adapter can be run here to try their queries; promtool's parser
is Prometheus' own, so a query it accepts is one Prometheus accepts. Template placeholders
($__rate_interval, $model, <<.LabelMatchers>>, ...) are replaced by values of the same shape.

    python deploy/tools/promql_as_rules.py > /tmp/queries.rules.yaml
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

OBSERVABILITY = Path(__file__).resolve().parents[1] / "observability"

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$model": ".*"}
ADAPTER_TEMPLATES = {
    "<<.Series>>": "attnserve_requests_waiting",
    "<<.LabelMatchers>>": 'namespace="attnserve",pod=~"attnserve-.*"',
    "<<.GroupBy>>": "pod",
}


def _substitute(expr: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        expr = expr.replace(placeholder, value)
    return expr


def dashboard_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, expr) for every target of every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for nested in (panel, *panel.get("panels", ())):
            for target in nested.get("targets", ()):
                where = f"dashboard panel {nested['title']!r} target {target['refId']}"
                yield where, _substitute(target["expr"], GRAFANA_VARIABLES)


def adapter_queries(config: dict) -> Iterator[tuple[str, str]]:
    """(where, expr) for every metricsQuery of the adapter's rules."""
    for i, rule in enumerate(config["rules"]):
        yield f"adapter rule {i}", _substitute(rule["metricsQuery"], ADAPTER_TEMPLATES)


def as_rules_file(queries: list[tuple[str, str]]) -> dict:
    rules = [{"record": f"check:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    return {"groups": [{"name": "queries", "rules": rules}]}


def main() -> int:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    adapter = yaml.safe_load((OBSERVABILITY / "prometheus-adapter.yaml").read_text())
    queries = [*dashboard_queries(dashboard), *adapter_queries(adapter)]
    for i, (where, _) in enumerate(queries):
        print(f"# check:query_{i} = {where}")
    yaml.safe_dump(as_rules_file(queries), sys.stdout, sort_keys=False, width=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
