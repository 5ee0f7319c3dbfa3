"""Processes r1distill starts die with the process that started them, however it ends (even kill -9).

On Linux the kernel does it (`prctl(PR_SET_PDEATHSIG)`); elsewhere, and for processes that are not
direct children (those `accelerate launch` starts for a stage of `r1distill run`), a thread ends the
process once the one it belongs to is gone. Processes a library starts out of our reach (a local Ray
cluster's per-node agents) are marked and killed by a guard process when their owner ends (`marked`).

    python -m r1distill.processes MARK    # the guard itself, started by `marked`
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER_ENV = "R1DISTILL_OWNER_PID"
"""Set by `r1distill run` for a stage it launches: every r1distill process under it exits when that pid is gone."""
MARK_ENV = "R1DISTILL_PROCESS_MARK"
"""Carried by every process started inside `marked`, which its guard kills."""


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


@contextmanager
def marked() -> Iterator[None]:
    """Every process started inside the block, and every process those start, carries a mark in its
    environment; when the block ends, or this process dies however it dies (kill -9 too), a guard
    process kills those still running.

    For libraries whose processes do not die with their parent: a local Ray cluster's dashboard and
    runtime-env agents outlive a killed driver by a minute (a 60 s call to the dead head). The guard
    notes the marked processes and their descendants as they appear and watches a pipe whose only
    writer is this process, so it acts when the block ends or the kernel closes the pipe at this
    process's death; it sits in a session of its own, out of reach of the Ctrl-C that ends the block.
    Linux only (it reads /proc); elsewhere the block runs unguarded.
    """
    if not Path("/proc/self/environ").exists():
        yield
        return
    mark = f"{os.getpid()}-{secrets.token_hex(8)}"
    guard = subprocess.Popen([sys.executable, "-m", "r1distill.processes", mark], stdin=subprocess.PIPE, start_new_session=True)
    previous = os.environ.get(MARK_ENV)
    os.environ[MARK_ENV] = mark
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MARK_ENV, None)
        else:
            os.environ[MARK_ENV] = previous
        guard.stdin.close()
        guard.wait()


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc (a process gone meanwhile is skipped)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The fields after the command name, which is in parentheses and may hold anything.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _is_marked(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def _guard(mark: str) -> None:
    """Until the owner closes the pipe or dies: note every marked process and every descendant of one
    (Ray's raylet starts its agents with an environment of its own, so parentage finds what the mark
    does not), twice a second. Then SIGKILL those still running, each checked by its start time so a
    reused pid is spared."""
    needle = f"{MARK_ENV}={mark}".encode() + b"\0"
    known: dict[int, str] = {}
    seen: set[int] = set()
    while True:
        table = _process_table()
        for pid, (parent, started) in table.items():
            if pid == os.getpid() or known.get(pid) == started:
                continue
            if parent in known or (pid not in seen and _is_marked(pid, needle)):
                known[pid] = started
            seen.add(pid)
        if select.select([sys.stdin], [], [], 0.5)[0] and not os.read(sys.stdin.fileno(), 1024):
            break
    table = _process_table()
    for pid, started in known.items():
        if table.get(pid, (None, None))[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


if __name__ == "__main__":
    _guard(sys.argv[1])
