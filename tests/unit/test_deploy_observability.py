"""The dashboard, alert rules, prometheus-adapter rules and HPA under deploy/ name only series
that attnserve's metrics module really exposes (syntax is promtool's job, in make lint-deploy)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from service.metrics import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OBSERVABILITY = DEPLOY / "observability"
SERIES_NAME = re.compile(r"\battnserve_[a-z0-9_]+")
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


@pytest.fixture(scope="module")
def exposed_series() -> set[str]:
    """Every sample name ServerMetrics can expose, histogram and counter suffixes included."""
    names = set()
    for family in ServerMetrics().registry.collect():
        if family.name.startswith("attnserve_"):
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


def _adapter_rules() -> list[dict]:
    return yaml.safe_load((OBSERVABILITY / "prometheus-adapter.yaml").read_text())["rules"]


def test_alert_rules_query_exposed_series(exposed_series):
    groups = yaml.safe_load((OBSERVABILITY / "alert-rules.yaml").read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    assert set(SERIES_NAME.findall("\n".join(exprs))) - exposed_series == set()


def test_dashboard_queries_exposed_series(exposed_series):
    text = (OBSERVABILITY / "grafana-dashboard.json").read_text()
    panels = json.loads(text)["panels"]
    assert any(panel.get("targets") for panel in panels)
    assert set(SERIES_NAME.findall(text)) - exposed_series == set()


def test_adapter_rules_read_exposed_series(exposed_series):
    queries = [rule["seriesQuery"] + rule["metricsQuery"] for rule in _adapter_rules()]
    assert set(SERIES_NAME.findall("\n".join(queries))) - exposed_series == set()


def test_hpa_metrics_are_published_by_the_adapter():
    published = {
        rule["name"].get("as") or rule["seriesQuery"].split("{")[0] for rule in _adapter_rules()
    }
    hpa = yaml.safe_load((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted
    assert wanted <= published
