"""processes.marked: what a block starts, even detached and reparented, ends with the block or its process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# A process that starts, inside `marked`, a grandchild in a session of its own (as a library's daemon
# is: out of reach of its parent's death signal and process group), prints its pid, then waits.
OWNER = textwrap.dedent("""
    import subprocess, sys, time
    from r1distill.processes import marked
    with marked():
        daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        print(daemon.pid, flush=True)
        if sys.argv[1] == "wait":
            time.sleep(600)
""")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30  # a bound against a hang: the guard acts within milliseconds
    while not _gone(pid):
        assert time.monotonic() < deadline, "the marked process outlived its owner"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads /proc")
def test_a_marked_daemon_dies_when_its_owner_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", OWNER, "wait"], stdout=subprocess.PIPE, text=True)
    daemon = int(owner.stdout.readline())
    assert not _gone(daemon)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    _wait_gone(daemon)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads /proc")
def test_a_marked_daemon_dies_when_the_block_ends():
    owner = subprocess.run([sys.executable, "-c", OWNER, "end"], capture_output=True, text=True, timeout=60)
    assert owner.returncode == 0, owner.stderr
    _wait_gone(int(owner.stdout))
