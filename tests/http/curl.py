"""`curl` as an operator types it, for the HTTP tests: the status and body of one call."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

TIMEOUT_S = 120


@dataclass
class CurlAnswer:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        """The `data:` payloads of a server-sent event stream, in order."""
        lines = self.body.splitlines()
        return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def curl(*args: str, data: Any = None, connects: bool = True) -> CurlAnswer:
    """Run curl with `args` (and `data` as a JSON body, POSTed); skip if curl is missing. With
    `connects=False` the call is expected to fail before any HTTP answer (TLS refusals):
    status 0 and curl's error as the body."""
    if shutil.which("curl") is None:
        pytest.skip("the curl command is not installed")
    command = ["curl", "-sS", "--max-time", str(TIMEOUT_S), "-w", "\n%{http_code}", *args]
    if data is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S + 10)
    if not connects:
        assert done.returncode != 0, done.stdout
        return CurlAnswer(0, done.stderr)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return CurlAnswer(int(status), body)
