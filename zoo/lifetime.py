"""Child processes that end with their parent (Linux), so a killed parent leaves no orphan.

The child arranges it for itself, first thing in its main(): setting it from the parent
with ``preexec_fn`` would run Python between fork and exec, which is unsafe in a
multi-threaded parent (the server, a job process) and crashed with SIGSEGV here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

PARENT_ENV = "ZOO_PARENT_PID"


def child_env() -> dict[str, str]:
    """Environment additions for a child started by this process."""
    return {PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit if it already has."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):  # the parent died before prctl
        os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a staging directory's writer, say)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
