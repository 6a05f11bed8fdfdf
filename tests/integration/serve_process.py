"""`attnserve serve` in its own process, on free ports, as an operator starts it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

METRICS_LINE = re.compile(r"metrics on http://[^:]+:(\d+)/metrics")
READY_LINE = re.compile(r"ready on port (\d+)")


@dataclass
class ServeProcess:
    process: subprocess.Popen
    target: str  # host:port of its gRPC server
    metrics_port: int
    start_log: list[str]  # what it logged up to its readiness line


@contextmanager
def serve_in_subprocess(models_dir: Path, *args: str) -> Iterator[ServeProcess]:
    """The server with extra command-line `args`, once it logged that it is ready; killed at
    the end if the test left it running."""
    command = [sys.executable, "-m", "service.cli", "serve", "--models", str(models_dir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    lines: list[str] = []
    ports: dict[re.Pattern, int] = {}
    for line in process.stderr:  # the server logs to stderr: its metrics port, then readiness
        lines.append(line)
        for pattern in (METRICS_LINE, READY_LINE):
            if match := pattern.search(line):
                ports[pattern] = int(match.group(1))
        if READY_LINE in ports:
            break
    if READY_LINE not in ports or METRICS_LINE not in ports:
        process.kill()
        process.wait(timeout=30)
        pytest.fail("the server did not start:\n" + "".join(lines))
    reader = threading.Thread(target=process.stderr.read, daemon=True)  # keeps the pipe flowing
    reader.start()
    try:
        yield ServeProcess(process, f"127.0.0.1:{ports[READY_LINE]}", ports[METRICS_LINE], lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=5)
