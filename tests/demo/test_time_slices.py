"""The build's training processes ask Linux for long time slices (export/demo/time_slices.py),
keeping their policy and nice value, and leave idle-priority processes alone. Each case runs in
a child process, so the test process's own scheduling is never changed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from export.demo.time_slices import LONG_SLICE_NS
from service.cli import build_parser

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux scheduling attributes")


def _kernel_takes_custom_slices() -> bool:
    """Linux 6.12 added slice suggestions for the normal policy (sched_attr.sched_runtime)."""
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return (major, minor) >= (6, 12) and platform.machine() in {"x86_64", "aarch64"}


def _in_child(setup: str, call: str = "request_long_time_slices()") -> dict:
    """Run `setup`, then `call`, in a fresh interpreter; what it saw."""
    code = f"""
import json, os
from export.demo.time_slices import request_long_time_slices
{setup}
before = (os.sched_getscheduler(0), os.nice(0))
granted = {call}
with open("/proc/self/sched") as sched:
    slice_line = [line for line in sched if line.startswith("se.slice")]
print(json.dumps({{"granted": granted, "before": before,
                  "after": (os.sched_getscheduler(0), os.nice(0)),
                  "proc_slice": int(slice_line[0].split(":")[1]) if slice_line else None}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not _kernel_takes_custom_slices(), reason="needs Linux 6.12+ on x86_64/arm64")
def test_a_normal_process_gets_the_long_slice_and_keeps_its_nice_value() -> None:
    seen = _in_child("os.nice(7)")
    assert seen["granted"] == LONG_SLICE_NS
    assert seen["after"] == seen["before"] == [os.SCHED_OTHER, 7]
    if seen["proc_slice"] is not None:  # /proc/PID/sched shows it where debug info is built in
        assert seen["proc_slice"] == LONG_SLICE_NS


@pytest.mark.skipif(not _kernel_takes_custom_slices(), reason="needs Linux 6.12+ on x86_64/arm64")
def test_a_batch_process_stays_batch() -> None:
    seen = _in_child("os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))")
    assert seen["granted"] == LONG_SLICE_NS
    assert seen["after"] == seen["before"] == [os.SCHED_BATCH, 0]


def test_an_idle_priority_process_is_left_alone() -> None:
    seen = _in_child("os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))")
    assert seen["granted"] is None
    assert seen["after"] == seen["before"] == [os.SCHED_IDLE, 0]


@pytest.mark.skipif(_kernel_takes_custom_slices(), reason="this kernel takes slice suggestions")
def test_an_older_kernel_grants_nothing() -> None:
    assert _in_child("")["granted"] is None


def test_zero_asks_nothing() -> None:
    seen = _in_child("", call="request_long_time_slices(0)")
    assert seen["granted"] is None
    assert seen["proc_slice"] != LONG_SLICE_NS


@pytest.mark.parametrize("value", ["0.05", "100.5", "-1", "nan", "fifty"])
def test_demo_build_refuses_a_slice_the_kernel_would_not_take(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["demo", "build", "--time-slice-ms", value])
    assert exited.value.code == 2
    assert "--time-slice-ms" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "parsed"), [("0", 0.0), ("0.1", 0.1), ("100", 100.0)])
def test_demo_build_takes_zero_and_the_kernel_range(value: str, parsed: float) -> None:
    args = build_parser().parse_args(["demo", "build", "--time-slice-ms", value])
    assert args.time_slice_ms == parsed


def test_demo_build_defaults_to_the_long_slice() -> None:
    assert build_parser().parse_args(["demo", "build"]).time_slice_ms == LONG_SLICE_NS / 1e6
