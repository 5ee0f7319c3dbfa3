"""The sandbox of the code reward, against real hostile programs under real bubblewrap.

    PYTHONPATH=.. python -m pytest tests/test_sandbox.py -q

Skipped with its reason where bubblewrap cannot make a sandbox (`make install` installs it); the
refusal tests run everywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1distill.rewards.sandbox import NOBODY, Job, Limits, Sandbox, SandboxUnavailable

LIMITS = Limits(cpu_seconds=2, wall_seconds=3.0, memory_mb=256, processes=16)


def _sandbox() -> Sandbox:
    try:
        return Sandbox(LIMITS)
    except SandboxUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def box() -> Sandbox:
    return _sandbox()


def run(box: Sandbox, program: str, stdin: str = ""):
    return box.map([Job(program, "stdio", stdin=stdin)])[0]


def test_a_program_reads_stdin_and_writes_stdout(box):
    result = run(box, "print(sum(map(int, input().split())))", "2 3 4\n")
    assert (result.returncode, result.stdout.strip(), result.timed_out) == (0, "9", False)


def test_the_parent_environment_never_reaches_a_program(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fakeSecret123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fakeSecret456")
    result = run(box, "import os; print(sorted(os.environ.items())); print(open('/proc/1/environ').read())")
    assert result.returncode == 0
    assert "fakeSecret" not in result.stdout and "HF_TOKEN" not in result.stdout
    assert "PATH" in result.stdout  # it did print its environment


def test_no_network(box):
    result = run(box, "import socket\ns = socket.socket(); s.settimeout(2); s.connect(('1.1.1.1', 80)); print('connected')")
    assert result.returncode != 0 and "connected" not in result.stdout
    assert "unreachable" in result.stderr


def test_a_large_allocation_fails_inside_the_program(box):
    result = run(box, "x = bytearray(1 << 30)\nprint('allocated')")
    assert result.returncode != 0 and "MemoryError" in result.stderr and not result.timed_out


def test_writes_outside_the_scratch_folder_fail(box, tmp_path):
    host_file = tmp_path / "escaped"
    program = "\n".join(
        f"try:\n    open({path!r}, 'w').write('x'); print('wrote', {path!r})\nexcept OSError as err:\n    print('refused', err.errno)"
        for path in ("/usr/escaped", "/box/escaped", str(host_file), "/etc/passwd")
    ) + "\nopen('/tmp/scratch', 'w').write('ok'); print(open('/tmp/scratch').read())"
    result = run(box, program)
    assert result.returncode == 0, result.stderr
    assert "wrote" not in result.stdout and result.stdout.count("refused") == 4
    assert result.stdout.strip().endswith("ok")  # its own /tmp is writable
    assert not host_file.exists()


def test_an_infinite_loop_ends_as_timeout(box):
    assert run(box, "while True:\n    pass").timed_out


def test_a_sleeping_program_ends_as_timeout(box):
    assert run(box, "import time\ntime.sleep(600)").timed_out


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except FileNotFoundError:
            pass
    return pids


def test_a_fork_bomb_ends_as_timeout_and_leaves_nothing_behind(box):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    before = len(_processes_of(NOBODY)) if os.geteuid() == 0 else None
    result = run(box, bomb)
    assert result.timed_out
    assert run(box, "print('alive')").stdout.strip() == "alive"  # the machine still runs programs
    if before is not None:  # as root the sandboxes run as nobody: none of the bomb's processes is left
        # The kernel takes a moment to reap a killed pid namespace's thousands of processes.
        deadline = time.monotonic() + 30
        while len(_processes_of(NOBODY)) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_processes_of(NOBODY)) <= before


def test_parallel_programs_do_not_interfere(box):
    program = "import time\nn = input()\nopen('/tmp/mine', 'w').write(n)\ntime.sleep(0.3)\nprint(n, open('/tmp/mine').read())"
    results = box.map([Job(program, "stdio", stdin=f"{i}\n") for i in range(8)])
    assert [r.stdout.split() for r in results] == [[str(i), str(i)] for i in range(8)]


def test_refused_without_bwrap_at_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(SandboxUnavailable, match="--allow-unsandboxed"):
        Sandbox(LIMITS, bwrap=str(tmp_path / "no-such-bwrap"))


def test_refused_without_bwrap_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        Sandbox(LIMITS)


def test_unsandboxed_when_allowed_still_has_limits_and_a_clean_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_fakeSecret123")
    box = Sandbox(LIMITS, bwrap=str(tmp_path / "no-such-bwrap"), allow_unsandboxed=True)
    assert not box.sandboxed
    env, loop = box.map([Job("import os; print(dict(os.environ))", "stdio"), Job("while True:\n    pass", "stdio")])
    assert env.returncode == 0 and "fakeSecret" not in env.stdout
    assert loop.timed_out


PARENT = """
import sys
from r1distill.rewards.sandbox import Job, Limits, Sandbox
box = Sandbox(Limits(wall_seconds=600, cpu_seconds=600))
print("ready", flush=True)
box.map([Job("import time\\nprint('started', flush=True)\\ntime.sleep(600)", "stdio")])
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _sleeping_program(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            if b"harness.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def test_every_sandboxed_process_dies_with_a_parent_killed_with_sigkill(box):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert parent.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30  # a hang guard, not a timed assertion
        while not (programs := _sleeping_program(_descendants(parent.pid))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert programs, "the sandboxed program never started"
        tree = _descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        while (alive := {pid for pid in tree if Path(f"/proc/{pid}").exists()}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, f"left behind: {alive}"
    finally:
        parent.kill()
