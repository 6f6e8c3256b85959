"""Child processes that end with their parent (Linux), so a killed parent leaves no orphan.

The child arranges it for itself, first thing in its main(): setting it from the parent
with ``preexec_fn`` would run Python between fork and exec, which is unsafe in a
multi-threaded parent (the server, a job process) and crashed with SIGSEGV here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

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


def clear_dead_writers(staging: Path) -> None:
    """Remove entries of ``staging`` named ``<pid>-...`` whose writing process has died.

    Writers name what they stage after their pid; a crash or a kill leaves it behind, hidden
    from readers, and the next writer clears it here.
    """
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
