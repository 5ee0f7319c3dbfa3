"""Running untrusted programs: a fresh bubblewrap sandbox per run, many runs in parallel.

The code reward runs what a model wrote. Each run is one process tree under bubblewrap (`bwrap`,
Debian's `bubblewrap`; `make install` installs it) with:
- no network and nothing shared with the host (`--unshare-all`: network, pid, ipc, uts, user, cgroup
  namespaces); the sandbox's pid 1 dies with bwrap, and the kernel then kills every process in it;
- a read-only system (/usr and its /bin, /lib links; the interpreter's prefix), no /etc, no /home,
  no /root; the program, its harness and its test files read-only in /box;
- a throwaway writable /tmp (a tmpfs of at most the file-size limit), the working folder;
- none of the parent's environment (`--clearenv`, a minimal PATH): no token or key reaches it;
- limits set by the harness before the program runs (rewards/harness.py): CPU seconds, address
  space, file size, processes. The kernel counts processes per user namespace and user, but exempts
  the host's root: run as root, bwrap is started as `nobody` (`setpriv --reuid`), so the processes
  limit holds and a fork bomb only runs into it until the wall-time limit kills the sandbox;
- a wall-time limit: past it the whole process group is killed (`timed_out`);
- stdin and stdout are files, not pipes: output is bounded by the file-size limit and no run can
  block the parent on a full pipe.

Every sandbox dies with the process that started it (`setpriv --pdeathsig KILL`, then bwrap's
`--die-with-parent`), even when that one is killed with -9.

Where no sandbox can be made (bwrap missing, or failing its probe: no user namespaces), `Sandbox`
raises `SandboxUnavailable` unless `allow_unsandboxed`: then programs run as plain subprocesses with
the same limits and a clean environment, but with the host's network and files, and a program that
forks and leaves its process group can outlive its run.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from r1distill.errors import UsageError

HARNESS = Path(__file__).with_name("harness.py")
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
_PATH = "/usr/local/bin:/usr/bin:/bin"
_CPU_KILLED = {-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL}
_TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(UsageError):
    """No sandbox can be made here and unsandboxed runs were not allowed."""


@dataclass(frozen=True)
class Limits:
    """What one run may use."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    """Address space of each process (a 1 GB allocation fails with MemoryError)."""
    file_mb: int = 16
    """Largest file a process may write, stdout included; also the size of the sandbox's /tmp."""
    processes: int = 32


@dataclass(frozen=True)
class Job:
    """One run: the program, the harness mode, its stdin, the extra files of /box (name -> text)."""

    program: str
    mode: str
    stdin: str = ""
    name: str = ""
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Result:
    returncode: int | None
    """None when the run was killed for its wall time."""
    stdout: str
    stderr: str
    timed_out: bool
    """Killed for its wall time, or for its CPU time (SIGXCPU, then SIGKILL; bwrap reports a signal as 128 + it)."""


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner can read `path` through every folder above it."""
    try:
        parts = Path(path).resolve()
        if not parts.stat().st_mode & stat.S_IROTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in parts.parents)
    except OSError:
        return False


class Sandbox:
    """Runs `Job`s, each in a fresh sandbox, up to `workers` at a time; see the module docstring."""

    def __init__(self, limits: Limits = Limits(), *, workers: int | None = None, bwrap: str = "bwrap", allow_unsandboxed: bool = False) -> None:
        self.limits = limits
        self.workers = workers or len(os.sched_getaffinity(0))
        self._root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv")
        self._harness = HARNESS.read_text()
        self._python = sys.executable
        if self._root and not _reachable_by_others(sys.executable):
            # nobody cannot reach an interpreter under /root (pyenv): the system's, under /usr, runs the programs.
            self._python = SYSTEM_PYTHON
        found = shutil.which(bwrap)
        self.problem = None if found else f"bwrap ({bwrap}) not found"
        self._bwrap = found
        self.sandboxed = False
        if found:
            probe = self._run(Job("print(6 * 7)", "stdio"))
            self.sandboxed = probe.returncode == 0 and probe.stdout.strip() == "42"
            if not self.sandboxed:
                self.problem = f"bwrap's probe failed ({(probe.stderr.strip().splitlines() or ['no output'])[-1][:160]})"
        if not self.sandboxed and not allow_unsandboxed:
            raise SandboxUnavailable(
                f"the code check runs untrusted programs and no sandbox can be made here: {self.problem}; install bubblewrap "
                "(`make install` does: apt-get install bubblewrap) or pass --allow-unsandboxed to run them without one"
            )

    def map(self, jobs: list[Job]) -> list[Result]:
        """The results of `jobs`, in order, run in parallel."""
        if not jobs:
            return []
        with ThreadPoolExecutor(min(self.workers, len(jobs)), thread_name_prefix="r1distill-sandbox") as pool:
            return list(pool.map(self._run, jobs))

    def _command(self, box: str) -> list[str]:
        limits = self.limits
        harness = [
            self._python, "-I", f"{box}/harness.py", str(limits.cpu_seconds), str(limits.memory_mb << 20),
            str(limits.file_mb << 20), str(limits.processes),
        ]
        prefix = [self._setpriv, "--pdeathsig", "KILL"] if self._setpriv else []
        if self._root and self._setpriv:
            prefix[1:1] = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        if self._bwrap is None or self.problem:  # unsandboxed, allowed
            return prefix + harness
        layout = ["--ro-bind", "/usr", "/usr"]
        for top in _TOP_LINKS:
            if os.path.islink(top):
                layout += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                layout += ["--ro-bind", top, top]
        interpreter_prefix = str(Path(self._python).resolve().parents[1])
        if not interpreter_prefix.startswith("/usr"):
            layout += ["--ro-bind", interpreter_prefix, interpreter_prefix]
        return prefix + [
            self._bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", _PATH,
            *layout, "--proc", "/proc", "--dev", "/dev", "--size", str(limits.file_mb << 20), "--tmpfs", "/tmp",
            "--ro-bind", box, "/box", "--chdir", "/tmp", "--setenv", "HOME", "/tmp",
            *harness[:2], "/box/harness.py", *harness[3:],
        ]

    def _run(self, job: Job) -> Result:
        with tempfile.TemporaryDirectory(prefix="r1distill-code-") as box:
            os.chmod(box, 0o755)  # read by nobody through the bind
            for name, text in (("main.py", job.program), ("harness.py", self._harness), *job.files):
                Path(box, name).write_text(text, encoding="utf-8")
                os.chmod(Path(box, name), 0o644)
            stdin_path, out_path, err_path = (Path(box, f".{name}") for name in ("stdin", "stdout", "stderr"))
            stdin_path.write_text(job.stdin, encoding="utf-8")
            argv = self._command(box) + [job.mode, *([job.name] if job.name else [])]
            with open(stdin_path, "rb") as stdin, open(out_path, "wb") as stdout, open(err_path, "wb") as stderr:
                process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=box, env={"PATH": _PATH}, start_new_session=True)
                try:
                    code: int | None = process.wait(self.limits.wall_seconds)
                except subprocess.TimeoutExpired:
                    code = None
                finally:
                    _kill_group(process)
            cap = (self.limits.file_mb << 20) + 1
            timed_out = code is None or code in _CPU_KILLED
            return Result(code, _read(out_path, cap), _read(err_path, cap)[-4000:], timed_out)


def _read(path: Path, cap: int) -> str:
    with path.open("rb") as file:
        return file.read(cap).decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen) -> None:
    """Kill what is left of a run's process group (all of it after a timeout) and reap the run."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
