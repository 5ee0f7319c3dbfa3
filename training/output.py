"""OUT of a training run: the run record (run.json) that says which run a folder holds, and resume.

A folder holds one run. Rerunning into it is refused unless the settings that define the run match
(the model and the data first, they are what a user recognises a run by) and --resume is given; then
the run continues from its last complete checkpoint and metrics.jsonl keeps each step once.

run.json and the metrics kept on resume are written whole or not at all (`r1distill.files`): the next
run reads run.json first, and a torn one would refuse every rerun into the folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from r1distill import files, hub
from r1distill.errors import UsageError, first_line
from r1distill.redact import redact_command, redact_settings
from r1distill.training import ranks
from r1distill.training.callbacks import METRICS_FILE

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def run_settings(cfg) -> dict:
    """The settings that define a run in OUT, with paths made absolute so a rerun from elsewhere matches, and
    credentials redacted (redact.py): run.json records them, and a rerun compares its own the same way."""
    settings = asdict(cfg)
    for name in ("input", "model", "teacher"):  # distill has a teacher
        if name in settings and Path(settings[name]).exists():
            settings[name] = str(Path(settings[name]).resolve())
    settings["command"] = redact_command(settings["command"])
    return redact_settings(settings)


def run_record(cfg, started, template: str, finished: dict | None) -> dict:
    """OUT/run.json of a trainer (sft, rl, distill): its settings, start, processes, template and, once done, how it ended."""
    return {"settings": run_settings(cfg), "started": started.isoformat(), "processes": ranks.world_size(), "template": template, "finished": finished}


def check_output(cfg, stage: str, resumable: tuple[str, ...]) -> str | None:
    """None for a fresh OUT (`cfg.output`), the last checkpoint for --resume; UsageError for an OUT that
    holds another run. `resumable` names the settings that may change between the runs of one OUT."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: is a file; choose a folder")
    if not out.exists() or not any(out.iterdir()):
        if cfg.resume:
            raise UsageError(f"--resume: {out} holds no run to resume; drop --resume to start one")
        return None
    if not (out / RUN_FILE).exists():
        raise UsageError(f"-o {out}: exists, is not empty and holds no r1distill {stage} run; choose a new folder")
    recorded = _recorded_settings(out / RUN_FILE)
    current = run_settings(cfg)
    differ = sorted((n for n in current if n not in resumable and recorded.get(n) != current[n]), key=lambda n: ("model", "input", n).index(n))
    if differ:
        name = differ[0]
        raise UsageError(
            f"-o {out}: holds a different run ({name} {recorded.get(name)!r} there, {current[name]!r} now"
            f"{f', and {len(differ) - 1} more settings' if len(differ) > 1 else ''}); choose a new folder, or give that run's settings"
        )
    if not cfg.resume:
        raise UsageError(f"-o {out}: holds a run with these settings; pass --resume to continue it from its last checkpoint, or choose a new folder")
    checkpoint = last_complete_checkpoint(out)
    if checkpoint is None:
        raise UsageError(f"--resume: {out} holds no complete checkpoint-* folder (the run died before --save-steps); start a new folder")
    return str(checkpoint)


def _recorded_settings(path: Path) -> dict:
    """The settings run.json records; a UsageError naming the file when it cannot say (damaged, edited, not ours)."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["settings"]
        if not isinstance(recorded, dict):
            raise TypeError("'settings' is not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: unreadable ({type(err).__name__}: {first_line(err)}); restore it, or choose a new folder") from None
    return recorded


def last_complete_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint-N with its trainer_state.json, which the trainer writes last: a process
    killed while saving leaves a newer folder without it, which would fail to load."""
    checkpoints = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for checkpoint in checkpoints:
        if (checkpoint / "trainer_state.json").exists():
            return checkpoint
        log.warning("%s is incomplete (the run was killed while saving it): resuming from an older checkpoint", checkpoint)
    return None


def start(out: Path, checkpoint: str | None, record: dict) -> None:
    """Record the run in OUT before training; on resume, drop the metrics of steps after the checkpoint
    (the resumed run does them again, so each step is logged once) and a last line a kill cut short."""
    out.mkdir(parents=True, exist_ok=True)
    write_run(out, record)
    metrics = out / METRICS_FILE
    if checkpoint is None or not metrics.exists():
        return
    step = int(checkpoint.rsplit("-", 1)[-1])
    kept = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    files.write_text(metrics, "".join(kept))


def write_run(out: Path, record: dict) -> None:
    files.write_json(out / RUN_FILE, record)


def finished(steps: int, **figures) -> dict:
    """The run record's `finished` entry: when, after how many steps, and the stage's final figures."""
    return {"at": datetime.now(timezone.utc).isoformat(), "steps": steps, **figures}


def finish(out: Path, cfg, card: str, record: dict) -> None:
    """After training, on the main process: the model card, run.json marked finished, then the push, so
    the Hub gets the folder with both."""
    files.write_text(out / "README.md", card)
    write_run(out, record)
    if cfg.push_to_hub:
        hub.push_model(out, cfg.push_to_hub)


def train(trainer, out: Path, checkpoint: str | None, record: dict) -> None:
    """Train (from `checkpoint` with --resume) with r1distill's progress bar, recording the run in OUT first.

    transformers' own bar and log printer would print to stdout; the stage's TrainProgress replaces both.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if trainer.is_world_process_zero():
        start(out, checkpoint, record)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
