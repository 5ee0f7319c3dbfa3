"""The Math-Verify pool under faults, with real worker processes and real signals, nothing mocked.

A stuck worker behind a full pipe, a worker killed from outside, workers that keep dying, and a parent
that is terminated, killed or interrupted while a worker is stuck in SymPy.

    PYTHONPATH=.. python -m pytest -q tests/test_verify_pool.py
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from r1distill.rewards.verify import VerifierPool

# Math-Verify evaluates this power in C with the GIL held: minutes of CPU that no Python-level
# timeout can interrupt (checked: still running after 20 s).
STUCK = "\\boxed{9^{9^{9^{9}}}}"
# Only SymPy can tell that x * x is x^2: the fast path leaves it to a worker.
SYMPY = "\\boxed{x \\cdot x}"
# About 20,000 characters, the most of a response the verifier reads: 64 of them (1.3 MB) are far
# more than a pipe or socket buffer holds (64 KiB to 208 KiB). Numbered, so that no two are the same
# pair (a repeated pair is verified once, and would not travel).
LONG = "Some words of reasoning, no mathematics. " * 490 + SYMPY


def _long(number: int) -> str:
    return f"Attempt {number}. {LONG[-19_900:]}"
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def _pool_processes() -> list[psutil.Process]:
    """This process's descendants: the forkserver, its workers and the resource tracker."""
    return psutil.Process().children(recursive=True)


def _workers() -> list[psutil.Process]:
    """The verifier workers: children of this process's forkserver."""
    return [worker for child in psutil.Process().children() for worker in child.children()]


def _still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    # PID 1 of a container may never reap orphans: a zombie has ended all the same.
    running = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while _still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _still_running(processes)


def _start_script(tmp_path: Path, body: str) -> subprocess.Popen:
    """Run `body` in a fresh interpreter, in its own session (so a group signal reaches only it)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


# A parent with one worker stuck in SymPy and one idle, waiting for a task. Four golds first, so
# both workers are past their start-up (a task each at least) when the test signals them.
STUCK_PARENT = f"""
    import sys
    from r1distill.rewards.verify import VerifierPool

    if __name__ == "__main__":
        try:
            with VerifierPool(workers=2, timeout=120) as pool:
                assert pool.judge(["x^2", "x^3", "x^4", "x^5"], [{SYMPY!r}] * 4)[0].verdict == "correct"
                sys.stdout.write("judging\\n")
                sys.stdout.flush()
                pool.judge(["1"], [{STUCK!r}])
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\\n")
            sys.exit(130)
"""


def _stuck_parent(tmp_path: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A running STUCK_PARENT and its descendants, once its worker is deep in SymPy."""
    parent = _start_script(tmp_path, STUCK_PARENT)
    assert parent.stdout.readline() == "judging\n", parent.stderr.read()
    time.sleep(1.0)
    descendants = psutil.Process(parent.pid).children(recursive=True)
    busy = [p for p in descendants if p.cpu_percent(interval=0.2) > 20]
    assert len(descendants) >= 3 and busy, "the forkserver and two workers, one of them stuck"
    return parent, descendants


@pytest.mark.timeout(60)
def test_a_stuck_worker_with_a_full_pipe_times_out_and_the_rest_is_verified():
    # The second task (64 long answers, one gold) cannot fit in the pipe of the worker stuck on the
    # first: a parent that blocked sending it would never reach the timeout.
    golds, responses = ["1"] + ["x^2"] * 64, [STUCK] + [_long(i) for i in range(64)]
    assert sum(map(len, responses)) > 1 << 20
    started = time.monotonic()
    with VerifierPool(workers=1, timeout=3.0) as pool:
        verdicts = [j.verdict for j in pool.judge(golds, responses)]
        assert (pool.timeouts, pool.verified) == (1, 64), "every long answer went to the replacement worker"
    assert verdicts == ["timeout"] + ["correct"] * 64
    assert time.monotonic() - started < 20


@pytest.mark.timeout(60)
def test_a_worker_killed_from_outside_is_an_error_and_the_rest_is_verified(caplog):
    # One gold: the killed worker has parsed it and verified nothing, so the rest of its task is
    # requeued to the replacement, which needs SymPy for every row.
    golds, responses = ["x^2"] * 6, [STUCK] + [SYMPY, "\\boxed{x + x}"] * 2 + [LONG]
    killed = []

    def kill_the_stuck_worker():
        time.sleep(1.5)
        for worker in _workers():
            killed.append(worker.pid)
            worker.kill()

    killer = threading.Thread(target=kill_the_stuck_worker)
    with caplog.at_level(logging.WARNING, logger="r1distill.rewards.verify"), VerifierPool(workers=1, timeout=60) as pool:
        # A worker that has started and parsed this gold is deep in the stuck item 1.5 s later.
        assert [j.verdict for j in pool.judge(["x^2"], [SYMPY])] == ["correct"]
        killer.start()
        started = time.monotonic()
        judgements = pool.judge(golds, responses)
        elapsed = time.monotonic() - started
        again = [j.verdict for j in pool.judge(["(1,3]\\cup[5,\\infty)"], ["\\boxed{[5,\\infty)\\cup(1,3]}"])]
        # The first call's row, the three distinct pairs left of the killed task, the last call's row.
        assert (pool.timeouts, pool.verified) == (0, 5), "workers gave every verdict but the killed one"
    killer.join()
    assert len(killed) == 1
    assert [j.verdict for j in judgements] == ["error", "correct", "incorrect", "correct", "incorrect", "correct"]
    assert judgements[0].score is None, "a death is 'cannot verify', not a wrong answer"
    assert again == ["correct"], "the replacement worker keeps working"
    assert elapsed < 20, "the death is seen at once, not at the 60 s timeout"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(killed[0]) in warnings[0] and "SIGKILL" in warnings[0], warnings


@pytest.mark.timeout(60)
def test_workers_that_keep_dying_abort_the_run_with_one_line(tmp_path):
    # No `__main__` guard: every worker re-runs this script on start and dies starting a pool of its
    # own, before it verifies anything.
    script = _start_script(
        tmp_path,
        f"""
        from r1distill.rewards.verify import VerifierPool

        with VerifierPool(workers=1, timeout=10) as pool:
            pool.judge(["x^2", "y^2", "z^2", "w^2", "v^2"], [{SYMPY!r}] * 5)
        """,
    )
    _, stderr = script.communicate(timeout=50)
    assert script.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("r1distill.rewards.verify.VerifierError: "), stderr[-3000:]
    assert "in a row" in last and "exited with code 1" in last and "__main__" in last


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_process_outlives_a_parent_that_is_killed(tmp_path, signum):
    parent, descendants = _stuck_parent(tmp_path)
    try:
        parent.send_signal(signum)
        assert parent.wait(timeout=10) == -signum
        left = _wait_gone(descendants, 10)
        assert not left, [(p.pid, p.name(), p.status()) for p in left]
    finally:
        for process in _still_running(descendants):
            process.kill()


@pytest.mark.timeout(60)
def test_ctrl_c_stops_everything_without_worker_tracebacks(tmp_path):
    parent, descendants = _stuck_parent(tmp_path)
    try:
        # A terminal's Ctrl-C goes to the whole foreground process group, workers included.
        os.killpg(parent.pid, signal.SIGINT)
        _, stderr = parent.communicate(timeout=10)
        assert parent.returncode == 130
        assert stderr == "interrupted\n"
        left = _wait_gone(descendants, 10)
        assert not left, [(p.pid, p.name(), p.status()) for p in left]
    finally:
        for process in _still_running(descendants):
            process.kill()


def test_the_default_worker_count_needs_no_sched_getaffinity(monkeypatch):
    # macOS has no os.sched_getaffinity.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert VerifierPool().workers == os.cpu_count()
