"""`executor: slurm`: each stage of a recipe an `sbatch` job, chained with `--dependency=afterok`.

    executor: slurm
    stages:
      prompts: {stage: synth, task: arithmetic, n: 100000}
      generate:
        input: prompts
        slurm: {gres: "gpu:8", cpus: 32, mem: 256G, time: "2-00:00:00", array: 4}   # 4 nodes, a quarter of the prompts each
      filter: {input: generate, slurm: {cpus: 16}}

`r1distill run RECIPE` checks the recipe, then submits one job per stage that is not finished; each
job runs `r1distill run RECIPE -o RUN_DIR --stage NAME` on its node, which is the local runner for that
one stage (the same skip, resume and rerun rules, the same pipeline.json), so RUN_DIR must be on
storage every node sees. A generate stage with `array: N` is a job array of N tasks, task i running
`--stage NAME --shard i/N` on its part of the prompts into the one output folder (generate's own
`--shard`), which later stages read whole; the stage is finished when all N parts are.

The submitting process then polls `scontrol show job`, which knows queued, running and (for
MinJobAge) ended jobs alike (`sacct` needs slurmdbd, which the single-node Slurm of .ci/slurm-up does
not run), until every job ends, and says which stage's job started or ended. A job that fails names its stage and its log
(RUN_DIR/.slurm/<stage>-<job id>.out: a stage's folder may be cleared when it starts over, so the logs
live beside the stages, not in them), its dependents are cancelled, and the exit code is not zero.
Ctrl-C cancels the jobs this run submitted (a job left running would race the rerun's own) and says so.
A rerun submits only the stages not finished.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1distill import processes
from r1distill.errors import StageError, UsageError, first_line

if TYPE_CHECKING:
    from r1distill.pipeline.recipe import Recipe, Stage

log = logging.getLogger(__name__)

LOG_DIR = ".slurm"
"""RUN_DIR/.slurm: the jobs' logs."""
_POLL_SECONDS = 2.0
# Job states after which a job never runs again (Slurm's names); all but COMPLETED are failures.
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
_MEMORY = re.compile(r"\d+[KMGT]?")
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}")  # minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_NAME = re.compile(r"[A-Za-z0-9_.:,=+-]+")


def section_items(settings: type, value: Any, section: str, example: str, where: str) -> tuple[dict[str, Any], list[str]]:
    """A stage's `slurm:` or `ray:` mapping: its keys that are fields of `settings`, and a problem per other key.

    None is an empty mapping; anything else that is not a mapping is a UsageError showing `example`.
    """
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {section}: expected a mapping such as {example}, got {value!r}")
    known = {f.name for f in fields(settings)}
    problems = [f"{where}: {section}: unknown key {key!r}; use {', '.join(sorted(known))}" for key in value if key not in known]
    return {key: item for key, item in value.items() if key in known}, problems


@dataclass(frozen=True)
class Resources:
    """A stage's `slurm:` mapping: what its job asks for (sbatch's options of the same meaning)."""

    cpus: int | None = None
    """--cpus-per-task."""
    mem: str | None = None
    """--mem, per node: 4096 (MB), 4G, 1T."""
    time: str | None = None
    """--time: minutes, HH:MM:SS or D-HH:MM:SS."""
    gres: str | None = None
    """--gres, e.g. gpu:8 or gpu:a100:4."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array: int | None = None
    """generate only: N array tasks, task i generating part i of N of the prompts."""

    @classmethod
    def read(cls, value: Any, kind: str, where: str) -> Resources:
        """A stage's `slurm:` value, checked; every problem in one UsageError naming the stage and key."""
        given, problems = section_items(cls, value, "slurm", "{cpus: 4, mem: 16G, time: '01:00:00'}", where)
        found: dict[str, Any] = {}
        for key, item in given.items():
            if key in ("cpus", "array"):
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    problems.append(f"{where}: slurm: {key} must be a whole number >= 1, got {item!r}")
                    continue
            else:
                item = str(item)
                pattern = {"mem": _MEMORY, "time": _TIME}.get(key, _NAME)
                if not pattern.fullmatch(item):
                    hint = {"mem": " (MB, or with K, M, G or T: 16G)", "time": " (minutes, HH:MM:SS or D-HH:MM:SS)"}.get(key, "")
                    problems.append(f"{where}: slurm: {key} {item!r} is not a Slurm {key}{hint}")
                    continue
            found[key] = item
        if "array" in found and kind != "generate":
            problems.append(f"{where}: slurm: array is taken by generate stages only (each task generates part of the prompts)")
        if problems:
            raise UsageError("; ".join(problems))
        return cls(**found)

    def sbatch_options(self) -> list[str]:
        flags = {"cpus": "--cpus-per-task", "mem": "--mem", "time": "--time", "gres": "--gres", "partition": "--partition",
                 "account": "--account", "qos": "--qos", "constraint": "--constraint"}
        options = [f"{flag}={getattr(self, name)}" for name, flag in flags.items() if getattr(self, name) is not None]
        if self.array is not None:
            options.append(f"--array=0-{self.array - 1}")
        return options


def check_tools() -> None:
    """sbatch, scontrol and scancel on PATH, before anything is submitted."""
    missing = [tool for tool in ("sbatch", "scontrol", "scancel") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"executor: slurm needs {', '.join(missing)} on PATH (a Slurm login node; .ci/slurm-up starts one on this machine)")


@dataclass
class _Job:
    stage: Stage
    id: str
    log: str
    """The log file's path pattern as given to sbatch (%A, %a for an array's tasks)."""
    state: str = "PENDING"
    started: float | None = None
    ended: float | None = None


def submit(plan: Recipe, steps: list, console) -> list[tuple[Stage, str, float]]:
    """Submit a job per step that is not a skip, each after the one before, and wait for all of them.

    Returns (stage, action shown, seconds its job ran) per step, skipped ones included; raises StageError
    naming the first stage whose job failed, after cancelling the jobs still waiting on it.
    """
    check_tools()
    logs = plan.run_dir / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    try:
        for step in steps:
            if step.action == "skip":
                continue
            after = jobs[-1].id if jobs else None
            jobs.append(_submit(plan, step.stage, after, logs))
            log.info("stage '%s' (%s): %s as Slurm job %s%s", step.stage.name, step.stage.kind, step.shown, jobs[-1].id,
                     f", after job {after}" if after else "")
    except StageError as err:
        # A chain cut short would run its first stages with nothing after them: none of it stays queued.
        if jobs:
            _scancel([job.id for job in jobs])
            raise StageError(f"{err}; the jobs submitted before it ({' '.join(job.id for job in jobs)}) are cancelled") from err
        raise
    except KeyboardInterrupt:
        _cancel(jobs)
        raise
    try:
        _wait(jobs, plan.run_dir, console)
    except KeyboardInterrupt:
        _cancel(jobs)
        raise
    ran = {job.stage.name: job for job in jobs}
    results = []
    for step in steps:
        job = ran.get(step.stage.name)
        seconds = (job.ended or 0.0) - (job.started or job.ended or 0.0) if job else 0.0
        results.append((step.stage, step.shown, seconds))
    return results


def _submit(plan: Recipe, stage: Stage, after: str | None, logs: Path) -> _Job:
    # The job re-enters the runner for its stage, with this Python and this environment (sbatch exports
    # it), from this folder: the recipe's relative paths and RUN_DIR mean what they mean here, so the
    # job's settings and fingerprints are the ones checked here.
    command = [sys.executable, "-m", "r1distill.cli", "run", str(plan.path), "-o", str(plan.run_dir), "--stage", stage.name]
    name = f"{stage.name}-%j.out"
    if stage.slurm.array is not None:
        command += ["--shard", f"${{SLURM_ARRAY_TASK_ID}}/{stage.slurm.array}"]
        name = f"{stage.name}-%A_%a.out"
    script = "#!/bin/bash\nexec " + " ".join(_quote(part) for part in command) + "\n"
    options = ["--parsable", f"--job-name=r1distill:{stage.name}", f"--output={logs / name}", f"--chdir={os.getcwd()}", "--export=ALL",
               "--kill-on-invalid-dep=yes", *stage.slurm.sbatch_options()]
    if after is not None:
        options.append(f"--dependency=afterok:{after}")
    # sbatch hands the job this environment; not the pid of a launching `r1distill run`, which means
    # nothing on another node and would end the job with a process it never had (processes.py).
    env = {name: value for name, value in os.environ.items() if name != processes.OWNER_ENV}
    done = subprocess.run(["sbatch", *options], input=script, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise StageError(f"stage '{stage.name}': sbatch refused the job: {first_line(ValueError(done.stderr))}")
    return _Job(stage, done.stdout.strip().split(";")[0], str(logs / name))


def _cancel(jobs: list[_Job]) -> None:
    """Ctrl-C: this run's jobs that have not ended are cancelled, and the line says which."""
    waiting = [job.id for job in jobs if job.state not in _ENDED]
    if waiting:
        _scancel(waiting)
        log.warning("interrupted: cancelled this run's Slurm jobs %s", " ".join(waiting))


def _quote(part: str) -> str:
    """A word of the job's script: quoted, except the array task's ${SLURM_ARRAY_TASK_ID}, which the shell fills in."""
    return part if part.startswith("${SLURM_ARRAY_TASK_ID}/") else shlex.quote(part)


def _wait(jobs: list[_Job], run_dir: Path, console) -> None:
    """Poll until every job ended; the first failed one raises, its dependents cancelled."""
    while True:
        for job in jobs:
            if job.state in _ENDED:
                continue
            state = _state(job, run_dir)
            if state == job.state:
                continue
            job.state = state
            if state == "RUNNING" and job.started is None:
                job.started = time.monotonic()
            if state in _ENDED:
                job.ended = time.monotonic()
                job.started = job.started or job.ended
            console.print(f"stage '{job.stage.name}' ({job.stage.kind}, Slurm job {job.id}): {state.lower()}")
            if state in _ENDED and state != "COMPLETED":
                _fail(job, jobs)
        if all(job.state in _ENDED for job in jobs):
            return
        time.sleep(_POLL_SECONDS)


def _fail(job: _Job, jobs: list[_Job]) -> None:
    later = [other.id for other in jobs[jobs.index(job) + 1:] if other.state not in _ENDED]
    if later:
        _scancel(later)
    logfile = job.log.replace("%j", job.id).replace("%A", job.id).replace("%a", "*")
    said = error_line(logfile)
    # The quote of the job's own error comes last: the line is cut to a length, the log's path must survive.
    prefix = f"stage '{job.stage.name}' ({job.stage.kind}): "
    raise StageError(
        f"{prefix}Slurm job {job.id} {job.state.lower()}; its log: {logfile}"
        + (f"; the later stages' jobs ({' '.join(later)}) are cancelled" if later else "")
        + "; earlier stages are kept, rerun to resume"
        + (f"; it said: {said.removeprefix(prefix)}" if said else "")
    )


def error_line(pattern: str) -> str | None:
    """The `error:` line the stage's command ended with, from its log (the first array task's that has one)."""
    for path in sorted(Path(pattern).parent.glob(Path(pattern).name)):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if line.startswith("error: "):
                return line.removeprefix("error: ")[:300]
    return None


def _state(job: _Job, run_dir: Path) -> str:
    """The job's state from `scontrol show job`: an array is RUNNING while any task runs, and its worst
    final state once all ended. A job the controller has forgotten (its MinJobAge passed between two
    polls) ended as pipeline.json says: its stage finished, or not."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job.id], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return "COMPLETED" if _finished(job.stage.name, run_dir) else "FAILED"
        return job.state  # a busy or restarting controller: asked again at the next poll
    states = re.findall(r"\bJobState=(\S+)", done.stdout)
    live = [state for state in states if state not in _ENDED]
    if live:
        return "RUNNING" if "RUNNING" in live or len(live) < len(states) else live[0]
    failed = [state for state in states if state != "COMPLETED"]
    return failed[0] if failed else "COMPLETED"


def _finished(name: str, run_dir: Path) -> bool:
    from r1distill.pipeline.recipe import STATE_FILE

    try:
        return bool(json.loads((run_dir / STATE_FILE).read_text())["stages"][name]["finished"])
    except (OSError, ValueError, KeyError):
        return False


def _scancel(ids: list[str]) -> None:
    subprocess.run(["scancel", *ids], capture_output=True, check=False)
