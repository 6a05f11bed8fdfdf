"""`promtool check metrics`: the live exposition follows Prometheus' naming and format rules."""

from __future__ import annotations

import subprocess

from tests.metrics.exposition import scrape


def test_promtool_finds_no_problem_in_the_live_exposition(promtool: str, served_metrics_port: int):
    exposition = scrape(served_metrics_port)
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""
