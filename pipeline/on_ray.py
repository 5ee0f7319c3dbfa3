"""`executor: ray`: each stage of a recipe a task on a Ray cluster, placed by the resources it asks for.

    executor: ray
    ray-address: head:6379              # the cluster to join; without it a local one, shut down at the end
    stages:
      prompts: {stage: synth, task: arithmetic, n: 100000}
      generate: {input: prompts, backend: vllm, tensor-parallel-size: 8, ray: {gpus: 8, cpus: 16}}
      filter: {input: generate, ray: {cpus: 32}}

`r1distill run RECIPE` checks the recipe here, then runs the stages in order, each as one Ray task that
runs `r1distill run RECIPE -o RUN_DIR --stage NAME` on whichever node has the stage's `ray:` resources
free: the runner for that one stage, with the same skip, resume and rerun rules and the same
pipeline.json, so RUN_DIR (and the recipe) must be on storage every node sees. A task, not a Ray job:
the job API needs Ray's dashboard (`ray[default]`), a task needs Ray alone and is placed the same way.
Ray does not retry a stage (a failed stage is the user's to fix, and a rerun resumes it); a failed one
is named with its log (RUN_DIR/.ray/<stage>.out) and its own error line, and the later stages do not
run. Ctrl-C cancels the running stage's task (its command dies with the task's worker) and says so.
Credentials are not sent through Ray: a stage's command reads them from its node's environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1distill.cluster import ClusterSettings, ray_cluster
from r1distill.errors import StageError, UsageError
from r1distill.pipeline.slurm import error_line, section_items

if TYPE_CHECKING:
    from r1distill.pipeline.recipe import Recipe, Stage

log = logging.getLogger(__name__)

LOG_DIR = ".ray"
"""RUN_DIR/.ray: each stage's command output."""
# What a stage's command needs from the driver's environment to find this r1distill; nothing else is sent.
_SENT_VARIABLES = ("PYTHONPATH", "R1DISTILL_CACHE", "HF_HOME", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class RayResources:
    """A stage's `ray:` mapping: what its task asks the cluster for (Ray's num_cpus, num_gpus, memory)."""

    cpus: float | None = None
    gpus: float | None = None
    memory: int | None = None
    """Bytes of memory Ray reserves for the task."""

    @classmethod
    def read(cls, value: Any, where: str) -> RayResources:
        """A stage's `ray:` value, checked; every problem in one UsageError naming the stage and key."""
        given, problems = section_items(cls, value, "ray", "{cpus: 4, gpus: 1}", where)
        for key, item in given.items():
            if isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0 or (key == "memory" and not isinstance(item, int)):
                problems.append(f"{where}: ray: {key} must be a {'whole ' if key == 'memory' else ''}number >= 0, got {item!r}")
        if problems:
            raise UsageError("; ".join(problems))
        return cls(**given)

    def task_options(self) -> dict:
        options = {"num_cpus": self.cpus, "num_gpus": self.gpus, "memory": self.memory}
        return {name: value for name, value in options.items() if value is not None}


def run_stages(plan: Recipe, steps: list, console) -> list[tuple[Stage, str, float]]:
    """Run every step that is not a skip as a Ray task, in order; returns (stage, action shown, seconds) per step.

    Raises StageError naming the first stage whose command failed; the later ones do not run.
    """
    cluster = ClusterSettings(executor="ray", ray_address=plan.ray_address)
    problems = cluster.cluster_problems()
    if problems:
        raise UsageError(f"{plan.path}: executor ray: {'; '.join(problems)}")
    logs = plan.run_dir / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    sent = {name: os.environ[name] for name in _SENT_VARIABLES if name in os.environ}
    results = []
    with ray_cluster(cluster):
        import ray

        task = ray.remote(max_retries=0)(_stage_command)
        for number, step in enumerate(steps, start=1):
            stage = step.stage
            console.rule(f"[bold]{number}/{len(steps)} {stage.name}[/] ({stage.kind}): {step.shown}" + ("" if step.action == "skip" else " on Ray"))
            if step.action == "skip":
                results.append((stage, step.shown, 0.0))
                continue
            logfile = logs / f"{stage.name}.out"
            started = time.monotonic()
            command = ["run", str(plan.path), "-o", str(plan.run_dir), "--stage", stage.name]
            ref = task.options(name=f"r1distill:{stage.name}", **stage.ray.task_options()).remote(command, os.getcwd(), sent, str(logfile))
            try:
                code = ray.get(ref)
            except KeyboardInterrupt:
                ray.cancel(ref, force=True)
                log.warning("stage '%s': its Ray task is cancelled", stage.name)
                raise
            if code != 0:
                said = error_line(str(logfile))
                prefix = f"stage '{stage.name}' ({stage.kind}): "
                raise StageError(
                    f"{prefix}its Ray task's command exited with code {code}; its log: {logfile}; the later stages are not run; "
                    "earlier stages are kept, rerun to resume" + (f"; it said: {said.removeprefix(prefix)}" if said else "")
                )
            results.append((stage, step.shown, time.monotonic() - started))
    return results


def _stage_command(command: list[str], cwd: str, sent: dict[str, str], logfile: str) -> int:
    """On the node Ray chose: the runner for one stage, with that node's Python, from the driver's folder."""
    from r1distill.processes import die_with_parent

    env = {**os.environ, **sent}
    with Path(logfile).open("w") as out:
        # Killed with the worker when Ray cancels the task: the stage never runs on without its driver.
        done = subprocess.run([sys.executable, "-m", "r1distill.cli", *command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=die_with_parent, check=False)
    return done.returncode
