"""Processes r1distill starts die with the process that started them, however it ends (even kill -9).

On Linux the kernel does it (`prctl(PR_SET_PDEATHSIG)`); elsewhere, and for processes that are not
direct children (those `accelerate launch` starts for a stage of `r1distill run`), a thread ends the
process once the one it belongs to is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

OWNER_ENV = "R1DISTILL_OWNER_PID"
"""Set by `r1distill run` for a stage it launches: every r1distill process under it exits when that pid is gone."""


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent exits; False where the system cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return True


def exit_when_gone(pid: int, *, parent: bool = False) -> None:
    """End this process (exit code 1, at once) within a second of process `pid` ending; with `parent`,
    of `pid` no longer being this process's parent (a pid can be reused; a parent link cannot)."""

    def watch() -> None:
        while (os.getppid() == pid) if parent else _alive(pid):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-when-gone").start()


def follow_owner() -> None:
    """Called at the start of every r1distill command: exit with the `r1distill run` that launched it, if any."""
    owner = os.environ.get(OWNER_ENV)
    if owner and owner.isdigit() and int(owner) != os.getpid():
        exit_when_gone(int(owner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
