"""`promtool check metrics`: the live exposition follows Prometheus' naming and format rules."""

from __future__ import annotations

import subprocess

from tests.metrics.exposition import scrape
from tests.metrics.live_server import LiveServer


def promtool_problems(promtool: str, exposition: str) -> str:
    """What `promtool check metrics` reports on `exposition` ("" when nothing)."""
    check = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
    )
    problems = (check.stdout + check.stderr).strip()
    assert check.returncode == 0 or problems, f"promtool failed silently ({check.returncode})"
    return problems


def test_promtool_finds_no_problem_in_every_kind_of_series(promtool: str, served_metrics_port):
    assert promtool_problems(promtool, scrape(served_metrics_port)) == ""


def test_promtool_finds_no_problem_after_real_traffic(promtool: str, live_server: LiveServer):
    assert promtool_problems(promtool, scrape(live_server.metrics_port)) == ""
