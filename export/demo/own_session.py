"""Each training process of the demo build in a session of its own.

Linux divides CPU time between sessions before processes (`sched_autogroup_enabled`, on by
default): beside one busy process in another terminal, the build's two trainings share one core
(1/2 each) while that process has the other to itself. In sessions of their own they are two
processes among three and get 2/3 of a core each, as they would beside the same work started
from the build's own terminal (docs/demo-models.md#build-time). Where autogroups are off, or in
a container's cgroup, it changes nothing.

A process in a session of its own no longer gets the terminal's Ctrl-C (nor Ctrl-Z), so it is
told to end with its parent (`PR_SET_PDEATHSIG`), and the build stops its workers itself when
interrupted (build.py). That signal comes when the thread that started the process ends: the
build starts its workers from its main thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def enter_own_session() -> bool:
    """Start a session (and process group) for the calling process, to end with its parent on
    Linux; whether a new session was started (False: already a session leader, or no setsid)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    try:
        os.setsid()
    except (AttributeError, PermissionError):  # no setsid (Windows), or a session leader already
        return False
    return True
