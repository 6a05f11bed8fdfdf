"""The build's training processes run in sessions of their own (export/demo/own_session.py), so
Linux's autogroups share the CPU with other sessions per process; they end with their parent,
and an interrupted build stops them rather than waiting minutes for their training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export.demo.build import INTERRUPTED_EXIT
from service.cli import build_parser

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux sessions and /proc")


def _alive(pid: int) -> bool:
    """Running (a zombie left for its parent to collect counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped, before or while reading
        return False


def _session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:  # a short-lived child (`uptime`) ended meanwhile
        return False


def _wait_until_ended(pids: list[int], seconds: float = 20.0) -> list[int]:
    """The pids still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _children(pid: int) -> list[int]:
    """From every process's /proc/PID/stat (the field after the state is the parent's pid)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_a_process_gets_a_session_and_an_autogroup_of_its_own() -> None:
    code = """
import json, os
from export.demo.own_session import enter_own_session
def autogroup():
    try:  # empty, or absent, where the kernel's autogroups are off
        with open("/proc/sys/kernel/sched_autogroup_enabled") as enabled:
            if enabled.read().strip() != "1":
                return None
        with open("/proc/self/autogroup") as group:
            return (group.read().split() or [None])[0]
    except OSError:
        return None
before = autogroup()
started = enter_own_session()
print(json.dumps({"started": started, "leader": os.getsid(0) == os.getpid(),
                  "group": os.getpgid(0) == os.getpid(), "before": before, "after": autogroup()}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["started"] and seen["leader"] and seen["group"]
    if seen["before"] is not None:  # kernels with autogroups on
        assert seen["after"] != seen["before"]


def test_a_process_in_its_own_session_ends_with_its_parent() -> None:
    """It misses the terminal's Ctrl-C, so its parent's end must end it."""
    worker = (
        "from export.demo.own_session import enter_own_session; import time; "
        "enter_own_session(); time.sleep(120)"
    )
    parent = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {worker!r}])
print(child.pid, flush=True)
time.sleep(120)
"""
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        child = int(process.stdout.readline())
        deadline = time.monotonic() + 30
        while os.getsid(child) != child and time.monotonic() < deadline:  # the session started
            time.sleep(0.05)
        assert os.getsid(child) == child
        process.kill()
        assert _wait_until_ended([child]) == []
    finally:
        process.kill()
        process.wait(timeout=10)


def test_an_interrupted_build_stops_its_training_processes(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the build alone, as its workers are in sessions of their own): the
    workers end and the build exits within seconds, not after their training."""
    build = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "build", "--output", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline:
            workers = [pid for pid in _children(build.pid) if _alive(pid)]
            in_sessions = [pid for pid in workers if _session_leader(pid)]
            if len(in_sessions) == 2:
                workers = in_sessions
                break
            time.sleep(0.1)
        assert len(workers) == 2, f"the build's training processes: {workers}"
        build.send_signal(signal.SIGINT)
        _, stderr = build.communicate(timeout=30)
        assert build.returncode == INTERRUPTED_EXIT
        assert "demo build interrupted" in stderr
        assert _wait_until_ended(workers) == []
        assert not (tmp_path / ".built").exists()
    finally:
        build.kill()
        build.wait(timeout=10)


@pytest.mark.parametrize(("argv", "own"), [([], True), (["--no-own-sessions"], False)])
def test_own_sessions_is_the_default_and_can_be_turned_off(argv: list[str], own: bool) -> None:
    assert build_parser().parse_args(["demo", "build", *argv]).own_sessions is own
