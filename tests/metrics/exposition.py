"""Reading a Prometheus text exposition in tests: scrape it over HTTP, look up samples."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(port: int, host: str = "127.0.0.1") -> str:
    """The body of GET /metrics, as Prometheus would read it."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """Family name -> (type, samples); a counter's family name lacks its `_total`."""
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def _matching(text: str, sample_name: str, labels: dict[str, str]) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and labels.items() <= sample.labels.items()
    ]


def value(text: str, sample_name: str, **labels: str) -> float | None:
    """The value of the one sample named `sample_name` whose labels include `labels`; None if
    none matches, an AssertionError if several do."""
    matches = _matching(text, sample_name, labels)
    assert len(matches) <= 1, f"{len(matches)} samples of {sample_name} match {labels}"
    return matches[0] if matches else None


def total(text: str, sample_name: str, **labels: str) -> float:
    """The sum over every sample named `sample_name` whose labels include `labels`."""
    return sum(_matching(text, sample_name, labels))
