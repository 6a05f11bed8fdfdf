"""Reads the server's histograms (decode batch size, RPC and step seconds) from its /metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

DECODE_BATCH_METRIC = "attnserve_decode_batch_size"
REQUEST_DURATION_METRIC = "attnserve_request_duration_seconds"
STEP_DURATION_METRIC = "attnserve_decode_step_duration_seconds"
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


def _scrape(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=SCRAPE_TIMEOUT_S) as response:
        return response.read().decode()


def decode_batch_probe(metrics_url: str, model: str = "") -> Callable[[], tuple[float, float]]:
    """A probe returning the cumulative (rows, steps) of decode steps; OSError if unreachable."""
    return lambda: histogram_totals(_scrape(metrics_url), DECODE_BATCH_METRIC, model)


def server_seconds_probe(metrics_url: str, model: str) -> Callable[[], tuple[float, float]]:
    """A probe returning the server's cumulative seconds (in RPCs, in decode steps) for `model`;
    OSError if unreachable."""

    def probe() -> tuple[float, float]:
        text = _scrape(metrics_url)
        return (
            histogram_totals(text, REQUEST_DURATION_METRIC, model)[0],
            histogram_totals(text, STEP_DURATION_METRIC, model)[0],
        )

    return probe
