"""PROMETHEUS_MULTIPROC_DIR: the counts of several server processes add up in one /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.metrics.exposition import value

RECORD_ONE_REQUEST = """
from service.metrics import ServerMetrics
ServerMetrics().request_finished("summarizer", "3", "Summarize", "OK", 0.1)
"""
PRINT_EXPOSITION = """
from prometheus_client import generate_latest
from service.metrics import ServerMetrics
print(generate_latest(ServerMetrics().exposition_registry()).decode())
"""


def _run(code: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_requests_of_every_process_are_summed(tmp_path: Path):
    for _process in range(2):
        _run(RECORD_ONE_REQUEST, tmp_path)
    exposition = _run(PRINT_EXPOSITION, tmp_path)
    assert value(exposition, "attnserve_requests_total", code="OK") == 2
    assert value(exposition, "attnserve_request_duration_seconds_count") == 2
