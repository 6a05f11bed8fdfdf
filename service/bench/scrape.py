"""Reads the server's decode batch size histogram from its Prometheus /metrics endpoint."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

DECODE_BATCH_METRIC = "attnserve_decode_batch_size"
SCRAPE_TIMEOUT_S = 5.0


def histogram_totals(exposition: str, metric: str, model: str = "") -> tuple[float, float]:
    """(sum, count) of histogram `metric` over every label set (of `model` only, if given)."""
    total, count = 0.0, 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name != metric:
            continue
        for sample in family.samples:
            if model and sample.labels.get("model") != model:
                continue
            if sample.name == f"{metric}_sum":
                total += sample.value
            elif sample.name == f"{metric}_count":
                count += sample.value
    return total, count


def decode_batch_probe(metrics_url: str, model: str = "") -> Callable[[], tuple[float, float]]:
    """A probe returning the cumulative (rows, steps) of decode steps; OSError if unreachable."""

    def probe() -> tuple[float, float]:
        with urllib.request.urlopen(metrics_url, timeout=SCRAPE_TIMEOUT_S) as response:
            text = response.read().decode()
        return histogram_totals(text, DECODE_BATCH_METRIC, model)

    return probe
