"""Starting a real Prometheus server on 127.0.0.1 for one test, and querying its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT_S = 30
SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: attnserve
    static_configs:
      - targets: ["{target}"]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _wait_until_ready(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"prometheus not ready after {READY_TIMEOUT_S} s")


@contextmanager
def running_prometheus(target: str, workdir: Path) -> Iterator[str]:
    """A Prometheus scraping `target` (host:port of a /metrics) every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: `make tools` installs Debian's prometheus package")
    config = workdir / "prometheus.yml"
    config.write_text(SCRAPE_CONFIG.format(target=target))
    port = _free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for_query(base_url: str, query: str, timeout_s: float) -> list[dict[str, Any]]:
    """The first non-empty result of the instant query `query` within `timeout_s`."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = _get_json(url)
        assert body["status"] == "success", body
        if body["data"]["result"]:
            return body["data"]["result"]
        time.sleep(0.25)
    raise TimeoutError(f"no result for {query} after {timeout_s} s")
