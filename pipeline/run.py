"""r1distill run: the whole pipeline from one recipe, resumable stage by stage.

    r1distill run recipes/quickstart.yaml                 # synth, generate, filter, sft, rl, eval, report
    r1distill run my-recipe.yaml -o runs/try-2            # the same recipe into another RUN_DIR
    r1distill run my-recipe.yaml --stage filter           # that stage alone (the ones before it finished)

A distillation run is a chain of stages that each take minutes to days; a crash, a Ctrl-C or a changed
setting must not mean starting over, and nothing must run on stale inputs. So:

1. The recipe is read and every stage checked before any starts (recipe.py): a typo in the last stage
   fails in a second, not after hours of generation.
2. Each stage writes to RUN_DIR/<name>. RUN_DIR/pipeline.json records, per stage, a fingerprint of its
   settings and of every stage before it, and whether it finished.
3. A rerun walks the stages in order: a finished stage with the same fingerprint is skipped; an
   unfinished one is resumed with the stage's own resume (generate and eval keep every finished
   sample, sft and rl continue from their last checkpoint, the others are quick and start over); a
   stage whose settings changed, or that comes after one that reran, starts over in a cleared folder.
   pipeline.json also records, per stage, which start of each earlier stage it came after: a stage that ran
   before an earlier one ran again runs again too, even when that earlier one ran in another process
   (a run killed between two stages, `--stage`, a Slurm job).
4. A failing stage is named, the earlier outputs stay as they are, and the exit code is not zero.
   Rows a server refused for good fail generate and eval only beyond their --max-failed share
   (generate/failures.py): a few over-long prompts do not block every later stage.
5. Only what the runner made is removed: a stage's name is a plain folder name (recipe.py), and its
   folder is cleared only when it is a direct child of RUN_DIR recorded in pipeline.json.

With `executor: slurm` in the recipe, each stage is a Slurm job that runs `--stage` (see slurm.py); with
`executor: ray`, a Ray task that does (on_ray.py).

The stages are called as their commands call them (the same library functions and summaries), so a
stage in a recipe behaves exactly as typed on the command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from r1distill import files, processes
from r1distill.console import stderr_console
from r1distill.errors import StageError, UsageError, first_line
from r1distill.pipeline import recipe as recipes
from r1distill.pipeline import on_ray, slurm
from r1distill.pipeline.recipe import RESUME, STATE_FILE, Recipe, Stage
from r1distill.redact import redact_settings
from r1distill.stages import registry

if TYPE_CHECKING:
    from r1distill.generate.failures import FailedRows

log = logging.getLogger(__name__)

# Settings that do not change what a stage makes: how it is resumed and recorded, and how many refused
# rows it accepts (raising --max-failed after a stage failed on it resumes the stage, it does not redo it).
_NOT_FINGERPRINTED = (RESUME, "command", "max_failed")


@dataclass
class RunConfig:
    """Settings of one `r1distill run`."""

    recipe: str
    """Recipe YAML: `stages:` maps stage names to their options (the CLI's option names); see recipes/quickstart.yaml."""
    output: str | None = field(default=None, metadata={"flags": ("--output", "-o")})
    """RUN_DIR, where every stage writes RUN_DIR/<stage>; default: the recipe's `output`, else runs/<recipe name>."""
    check_only: bool = field(default=False, metadata={"flags": ("--check",)})
    """Check the recipe and show what a run would do (run, resume, skip), then stop."""
    stage: str | None = field(default=None, metadata={"flags": ("--stage",)})
    """Run only this stage (its earlier stages must be finished), as each Slurm job of `executor: slurm` does."""
    shard: str | None = field(default=None, metadata={"flags": ("--shard",)})
    """With --stage NAME of a generate stage: part i/N of its prompts only (an `array: N` Slurm task); the stage finishes when all N parts have."""


@dataclass
class StageResult:
    name: str
    kind: str
    action: str
    """run, resume, rerun (settings changed) or skip (finished); with --check, "would <action>"."""
    seconds: float
    output: str


@dataclass
class RunSummary:
    run_dir: str
    stages: list[StageResult]
    reports: list[str]
    """The HTML reports the run made (or has from an earlier run)."""


def run_pipeline(cfg: RunConfig) -> RunSummary:
    """Run the recipe (see the module docstring); the CLI and the Python API both call this."""
    plan = recipes.read(cfg.recipe, cfg.output)
    part = _part(cfg, plan)
    if part is not None and not cfg.check_only:
        return RunSummary(str(plan.run_dir), [_run_part(plan, cfg.stage, part)], [])
    state = _State(plan.run_dir)
    steps = _steps(plan, state)
    if cfg.stage is not None:
        steps = _only(steps, cfg.stage)
    if cfg.check_only:
        return RunSummary(str(plan.run_dir), [StageResult(s.stage.name, s.stage.kind, f"would {s.shown}", 0.0, str(s.stage.output)) for s in steps], [])
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    results = []
    console = stderr_console()
    if plan.executor in ("slurm", "ray") and cfg.stage is None:
        ran = slurm.submit(plan, steps, console) if plan.executor == "slurm" else on_ray.run_stages(plan, steps, console)
        results = [StageResult(stage.name, stage.kind, shown, seconds, str(stage.output)) for stage, shown, seconds in ran]
        return RunSummary(str(plan.run_dir), results, [str(stage.output) for stage in plan.stages if stage.kind == "report"])
    for number, step in enumerate(steps, start=1):
        stage = step.stage
        console.rule(f"[bold]{number}/{len(steps)} {stage.name}[/] ({stage.kind}): {step.shown}")
        started = time.monotonic()
        if step.action != "skip":
            _run_stage(step, state, plan.run_dir)
        results.append(StageResult(stage.name, stage.kind, step.shown, time.monotonic() - started, str(stage.output)))
    reports = [str(stage.output) for stage in plan.stages if stage.kind == "report"]
    return RunSummary(str(plan.run_dir), results, reports)


def fingerprint(stage: Stage) -> str:
    """A hash of what the stage makes: its kind and settings (not how it resumes or is recorded)."""
    return hashlib.sha256(json.dumps({"kind": stage.kind, "settings": _settings(stage)}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _settings(stage: Stage) -> dict:
    """The settings as recorded in pipeline.json: credentials (a base URL's password, a token in rl's
    `trl`, at any depth) are hidden (redact.py)."""
    return redact_settings({k: v for k, v in asdict(stage.settings).items() if k not in _NOT_FINGERPRINTED})


@dataclass
class _Step:
    stage: Stage
    fingerprint: str
    action: str
    """run (new), resume (unfinished), rerun (made before, made again) or skip (finished)."""
    why: str = ""
    """For a rerun: its settings changed, or an earlier stage ran (its input is new)."""
    earlier: tuple[str, ...] = ()
    """The stages before it in the recipe."""

    @property
    def shown(self) -> str:
        return f"{self.action} ({self.why})" if self.why else self.action


class _State:
    """RUN_DIR/pipeline.json: per stage, its fingerprint and whether it finished; rewritten atomically."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        try:
            self.stages: dict[str, dict] = json.loads(self.path.read_text())["stages"] if self.path.exists() else {}
        except (ValueError, KeyError) as err:
            raise UsageError(f"{self.path}: unreadable ({first_line(err)}); delete it to start the run over") from None

    def record(self, name: str, entry: dict) -> None:
        self.stages[name] = entry
        files.write_json(self.path, {"stages": self.stages})

    def reload(self) -> None:
        """What other processes recorded meanwhile (the other parts of a `--shard` stage)."""
        self.stages = _State(self.path.parent).stages

    def after(self, names: tuple[str, ...]) -> dict[str, str | None]:
        """Which start of each of the stages `names` is the latest: recorded with a stage, compared on a rerun."""
        return {name: self.stages.get(name, {}).get("attempt") for name in names}


def _steps(plan: Recipe, state: _State) -> list[_Step]:
    """What each stage needs. A folder the runner did not make is refused (see `_foreign`).

    After a stage that is not skipped, every later stage that ran before runs again: its input is new.
    """
    steps, upstream_ran = [], False
    for index, stage in enumerate(plan.stages):
        why = _foreign(stage, plan.run_dir, state)
        if why:
            raise UsageError(f"stage '{stage.name}': {why}; it is left alone and no stage runs: move it away or choose another -o")
        step = _Step(stage, fingerprint(stage), "run", earlier=tuple(earlier.name for earlier in plan.stages[:index]))
        entry = state.stages.get(stage.name)
        if entry is not None:
            # Entries written before `after` was recorded are taken as made after their earlier stages.
            if upstream_ran or entry.get("after", state.after(step.earlier)) != state.after(step.earlier):
                step.action, step.why = "rerun", "an earlier stage ran"
            elif entry["fingerprint"] != step.fingerprint:
                step.action, step.why = "rerun", "settings changed"
            elif entry.get("finished") and stage.output.exists():
                step.action = "skip"
            elif stage.folder.exists() and any(stage.folder.iterdir()):
                step.action = "resume"
        upstream_ran = upstream_ran or step.action != "skip"
        steps.append(step)
    return steps


def _only(steps: list[_Step], name: str) -> list[_Step]:
    """--stage NAME: its step alone, once every stage before it is finished."""
    names = [step.stage.name for step in steps]
    if name not in names:
        raise UsageError(f"--stage {name!r}: the recipe has no such stage; its stages are {', '.join(names)}")
    index = names.index(name)
    pending = [f"{step.stage.name} ({step.shown})" for step in steps[:index] if step.action != "skip"]
    if pending:
        raise UsageError(f"--stage {name!r}: the stages before it are not all finished: {', '.join(pending)}; run them first, or the whole recipe")
    return [steps[index]]


def _part(cfg: RunConfig, plan: Recipe) -> tuple[int, int] | None:
    """--shard i/N, checked: part i of N of a generate stage named by --stage."""
    if cfg.shard is None:
        return None
    kinds = {stage.name: stage.kind for stage in plan.stages}
    if kinds.get(cfg.stage or "") != "generate":
        raise UsageError(f"--shard {cfg.shard!r} needs --stage naming a generate stage")
    index, _, count = cfg.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise UsageError(f"--shard must be i/N with 0 <= i < N, got {cfg.shard!r}")
    return int(index), int(count)


def _foreign(stage: Stage, run_dir: Path, state: _State) -> str | None:
    """Why RUN_DIR/<name> is not the runner's to clear or write into, or None when it is (or is absent).

    The stage name rule (recipe.py) already keeps the folder inside RUN_DIR; this also refuses a link
    planted at that name, which would make a cleared folder someone else's and the stage write there.
    """
    folder = stage.folder
    if folder.is_symlink():
        return f"{folder} is a symbolic link (to {os.readlink(folder)}), not a folder the runner made"
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if folder.resolve() != run_dir.resolve() / stage.name:
        return f"{folder} resolves to {folder.resolve()}, not to a folder directly in RUN_DIR"
    if stage.name not in state.stages and any(folder.iterdir()):
        return f"{folder} exists but was not made by this run (no entry in {state.path})"
    return None


def _run_stage(step: _Step, state: _State, run_dir: Path) -> None:
    stage = step.stage
    settings, entry = _prepare(step, state, run_dir)
    failures = _execute(stage, settings)
    if failures is not None:
        # Counted whether or not they stop the stage: within --max-failed, the finished entry says how many rows are missing.
        entry["failed"] = {"rows": failures.rows, "failed": failures.failed, "refused_for_good": failures.permanent}
        problem = failures.problem(settings.max_failed)
        if problem:
            state.record(stage.name, entry)
            raise StageError(f"stage '{stage.name}' ({stage.kind}): {first_line(StageError(problem))}; earlier stages are kept, rerun to resume")
    state.record(stage.name, {**entry, "finished": _now()})


def _prepare(step: _Step, state: _State, run_dir: Path, parts: int | None = None) -> tuple[object, dict]:
    """Ready the stage's folder (cleared when it starts over) and record its start; its settings to run with."""
    stage, action, settings = step.stage, step.action, step.stage.settings
    before = state.stages.get(stage.name, {}).get("settings", {})
    if action == "rerun" and step.why == "settings changed" and stage.kind == "generate" and _rows_still_valid(settings, before):
        # generate keeps its rows across changes that do not shape them (more samples, a larger
        # --max-tokens, other servers): it generates only what is missing.
        action = "resume"
    if action == "resume" and RESUME in asdict(settings):
        from r1distill.training.output import last_complete_checkpoint

        # sft and rl continue from their last complete checkpoint; without one there is nothing to keep.
        if last_complete_checkpoint(stage.folder) is not None:
            settings = replace(settings, resume=True)
        else:
            action = "run"
    # Checked again, not only before the first stage: earlier stages may have run for hours, and a link
    # planted at the name meanwhile must not make the stage write into, or clear, another folder.
    why = _foreign(stage, run_dir, state)
    if why:
        raise UsageError(f"stage '{stage.name}': {why}; it is left alone and the stage is not run: move it away and rerun")
    if (action in ("rerun", "run") or registry()[stage.kind].starts_over) and stage.name in state.stages and stage.folder.exists():
        # A stage that starts over starts from an empty folder (filter refuses a full one; sft and rl
        # would find the old run); generate and eval resume from what is in theirs. Only a folder
        # pipeline.json records is removed: one the runner did not make is empty here (`_foreign`).
        shutil.rmtree(stage.folder)
    stage.folder.mkdir(parents=True, exist_ok=True)
    # `attempt` tells this start from every other (two may fall in one second of `started`).
    entry = {"kind": stage.kind, "fingerprint": step.fingerprint, "settings": _settings(stage), "started": _now(), "finished": None,
             "attempt": secrets.token_hex(6), "after": state.after(step.earlier)}
    if parts is not None:
        entry["parts"], entry["parts_done"] = parts, []
    state.record(stage.name, entry)
    return settings, entry


def _execute(stage: Stage, settings) -> FailedRows | None:
    """The stage itself, its errors named after it; generate and eval return their failed rows."""
    try:
        if stage.accelerate:
            _launch(stage, settings)
            return None
        return _call(stage.kind, settings)
    except UsageError as err:
        raise UsageError(f"stage '{stage.name}' ({stage.kind}): {err}; earlier stages are kept, fix it and rerun") from err
    except StageError as err:
        raise StageError(f"stage '{stage.name}' ({stage.kind}): {first_line(err)}; earlier stages are kept, rerun to resume") from err
    except Exception:
        log.error("stage '%s' (%s) failed; earlier stages are kept, rerun the same command to resume", stage.name, stage.kind)
        raise


def _run_part(plan: Recipe, name: str, part: tuple[int, int]) -> StageResult:
    """--stage NAME --shard i/N: part i of a generate stage's prompts, into the folder all N parts share.

    The parts start and end in any order, on other machines: under a lock on pipeline.json, the first
    to start prepares the stage (clears it when it starts over) and the others join it; the last to end
    marks it finished. A rerun of the parts joins an unfinished stage and resumes each part.
    """
    from r1distill.generate.run import rank_shards

    index, count = part
    started = time.monotonic()
    with _locked(plan.run_dir):
        state = _State(plan.run_dir)
        step = _only(_steps(plan, state), name)[0]
        stage, entry = step.stage, state.stages.get(name)
        if step.action == "skip":
            return StageResult(name, stage.kind, "skip", 0.0, str(stage.output))
        joins = entry is not None and entry["finished"] is None and entry.get("parts") == count and step.action in ("run", "resume")
        if not joins:
            _prepare(step, state, plan.run_dir, count)
    settings = replace(stage.settings, shard=rank_shards(stage.settings.shard, count)[index])
    failures = _execute(stage, settings)
    problem = failures.problem(settings.max_failed) if failures is not None else None
    if problem:
        raise StageError(f"stage '{name}' ({stage.kind}) part {index}/{count}: {first_line(StageError(problem))}; earlier stages are kept, rerun to resume")
    with _locked(plan.run_dir):
        state.reload()
        entry = state.stages[name]
        entry["parts_done"] = sorted(set(entry.get("parts_done", [])) | {index})
        if len(entry["parts_done"]) == count:
            entry["finished"] = _now()
        state.record(name, entry)
    return StageResult(name, stage.kind, f"{step.shown}, part {index}/{count}", time.monotonic() - started, str(stage.output))


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """RUN_DIR's lock (an flock on RUN_DIR/.pipeline.lock), held while pipeline.json is read and rewritten by one of several processes."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    with files.open_append(run_dir / ".pipeline.lock") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _rows_still_valid(settings, before: dict) -> bool:
    """generate's rows in OUT answer the same prompts and were made by settings that shape rows alike."""
    from r1distill.generate.manifest import check_settings

    if before.get("input") != settings.input:
        return False

    try:
        check_settings(settings, Path(settings.output))
    except UsageError:
        return False
    return True


def _call(kind: str, settings) -> FailedRows | None:
    """Run one stage as its command does: the stage's function, then its summary on screen; generate
    and eval return their failed rows, which the caller weighs against --max-failed as the command does."""
    stage = registry()[kind]
    result = stage.call(settings)
    stage.show(result)
    return result.failures if stage.failed_rows else None


def _launch(stage: Stage, settings) -> None:
    """sft or rl under `accelerate launch --config_file FILE` (several GPUs, DeepSpeed, FSDP): the
    stage's own command in processes of its own, its settings handed over as a --config recipe."""
    import yaml

    from r1distill.training.recipe import recipe_fields

    values = {name: getattr(settings, name) for name in recipe_fields(settings) if getattr(settings, name) is not None}
    values.update(getattr(settings, "trl", {}))  # rl: the other GRPOConfig fields, as a recipe gives them
    # The real settings (a server URL's credentials too) go to the launched command through a new
    # file of a random name that only its owner can read, removed when the launch ends; a kill -9
    # leaves it behind, so the next launch of this stage removes what an earlier one left.
    name = f"{stage.name}.launch.yaml"
    files.remove_temps(stage.folder.parent, name)
    recipe = files.private_temp(stage.folder.parent, name, yaml.safe_dump(values, sort_keys=False).encode("utf-8"))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", stage.accelerate,
        "-m", "r1distill.cli", stage.kind, settings.input, "-o", settings.output, "--config", str(recipe),
    ]
    log.info("launching: %s", " ".join(command[1:]))
    # The launcher dies with this process (kill -9 included), and every r1distill process under it
    # exits within a second of this one: accelerate's workers are its grandchildren, in sessions of their own.
    env = {**os.environ, processes.OWNER_ENV: str(os.getpid())}
    try:
        code = subprocess.run(command, env=env, preexec_fn=processes.die_with_parent).returncode
    finally:
        recipe.unlink(missing_ok=True)
    if code != 0:
        raise StageError(f"accelerate launch exited with code {code} (its messages are above)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def print_summary(summary: RunSummary) -> None:
    from rich.table import Table

    table = Table(title=f"run → {summary.run_dir}")
    for column in ("stage", "kind", "action", "time", "output"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for result in summary.stages:
        shown = "finished earlier, skipped" if result.action == "skip" else result.action
        table.add_row(result.name, result.kind, shown, "-" if result.action.startswith("would") else f"{result.seconds:.0f} s", result.output)
    stderr_console().print(table)
