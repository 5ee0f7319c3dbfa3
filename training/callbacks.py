"""What a training run shows and keeps: OUT/metrics.jsonl and a live progress bar, as TrainerCallbacks.

metrics.jsonl has one JSON object per logging step (sft: loss, eval loss, learning rate, grad norm;
rl: rewards, completion lengths, KL, clip ratios and sample completions; both: tokens/s; with
--eval-every, held-out pass@1: heldout.py), so a report
can draw its curves without TensorBoard or W&B. A resumed run appends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from r1distill import files
from r1distill.console import stderr_console

METRICS_FILE = "metrics.jsonl"


class TokenRate:
    """Tokens per second between two logging steps, from TRL's running `num_tokens` count."""

    def __init__(self) -> None:
        self.last: tuple[float, float] | None = None

    def __call__(self, logs: dict) -> float | None:
        if "num_tokens" not in logs:
            return None
        now, tokens = time.monotonic(), float(logs["num_tokens"])
        previous, self.last = self.last, (now, tokens)
        if previous is None or tokens <= previous[1]:
            return None
        return (tokens - previous[1]) / max(now - previous[0], 1e-9)


class MetricsLog(TrainerCallback):
    """Appends every log of the trainer, with its step and tokens/s, to OUT/metrics.jsonl (main process only).

    `extra` adds fields to each line that has a training metric (rl: a few sample completions).
    """

    def __init__(self, output: str | Path, extra: Callable[[], dict] | None = None) -> None:
        self.output = output
        self.rate = TokenRate()
        self.extra = extra

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        rate = self.rate(logs)
        if rate is not None:
            record["tokens_per_second"] = rate
        if self.extra is not None and "learning_rate" in logs:
            record.update(self.extra())
        append_metrics(self.output, record)


def append_metrics(output: str | Path, record: dict) -> None:
    """Append one line to OUT/metrics.jsonl (the trainer's logs, held-out scores)."""
    with files.open_append(Path(output) / METRICS_FILE, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


class TrainProgress(TrainerCallback):
    """A bar over optimizer steps with one metric (`shown`: loss, reward), tokens/s and ETA, on stderr
    (replaces transformers' tqdm)."""

    def __init__(self, shown: str = "loss") -> None:
        self.shown = shown
        self.progress: Progress | None = None
        self.rate = TokenRate()

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"steps  {self.shown} {{task.fields[value]}}  {{task.fields[rate]:>7.0f}} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr_console(),
        )
        # A resumed run starts its bar at the checkpoint's step.
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, value="-", rate=0.0)
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        fields = {}
        if logs.get(self.shown) is not None:
            fields["value"] = f"{logs[self.shown]:.4f}"
        rate = self.rate(logs)
        if rate is not None:
            fields["rate"] = rate
        self.progress.update(self.task, **fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
