"""The stages, each declared once: its settings, its run function and summary, its command's text.

The CLI makes one command per entry (cli.py) and the runner one stage kind per entry (pipeline/), so a
stage in a recipe is checked and run exactly as its command is, and a new stage is one entry here plus
its own folder. An entry names its run and summary functions by import path: listing the stages (for
`--help` or a recipe's check) imports only their settings, never torch or a model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any


@dataclass(frozen=True)
class StageKind:
    """One stage: `r1distill <name>` on the command line, `stage: <name>` in a recipe."""

    name: str
    config: type
    """The settings dataclass: its fields are the command's options and the recipe's keys."""
    argument: str
    """The field given as the command's positional argument."""
    run: str
    """`module:function` taking the settings, returning what `summary` shows."""
    summary: str
    """`module:function` showing the run's result on stderr."""
    help: str
    """The command's help: its first line is the one-line description in `r1distill --help`."""
    interrupted: str
    """The line Ctrl-C prints, saying what is kept and how to go on."""
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Options whose values are a fixed set (shown in --help, refused otherwise)."""
    read_recipe: Callable[[str], dict] | None = None
    """Trainers: the reader of their `--config FILE` settings; they alone run under `accelerate launch`."""
    checks_first: bool = False
    """Trainers: the settings are checked before the run's modules load, so a missing training extra is one line."""
    failed_rows: bool = False
    """generate and eval: the result counts rows the server refused or that failed, weighed against --max-failed."""
    prints_result: bool = False
    """report: the command prints its result (the page's path) on stdout, for scripts."""
    output_file: str | None = None
    """The file the stage writes inside RUN_DIR/<name> in a recipe, or None when it writes the folder itself."""
    references: tuple[str, ...] = ()
    """Options whose value in a recipe may be an earlier stage's name (its output path is put in its place)."""
    inputs: tuple[str, ...] = ()
    """Options naming data that must exist (a file, a folder, an earlier stage or a Hub dataset id)."""
    starts_over: bool = False
    """Quick stages: a rerun in a recipe starts over in an empty folder rather than resuming."""

    @property
    def trains(self) -> bool:
        return self.read_recipe is not None

    def call(self, settings: Any) -> Any:
        """Run the stage as its command does, without the command's edges (exit codes, Ctrl-C line)."""
        return _function(self.run)(settings)

    def show(self, result: Any) -> None:
        _function(self.summary)(result)


def _function(path: str) -> Callable:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@cache
def registry() -> dict[str, StageKind]:
    """Every stage, in the order a distillation run uses them."""
    from r1distill.backends import BACKENDS
    from r1distill.cluster import EXECUTORS
    from r1distill.distill import config as sft
    from r1distill.eval.config import EVAL_CHECKS, EvalConfig
    from r1distill.filter.run import CHECKS, DEDUP_MODES, NO_THINK_STYLES, FilterConfig
    from r1distill.generate.config import PREFILLED_THINK, GenerateConfig
    from r1distill.onpolicy import config as onpolicy
    from r1distill.prompts import TEMPLATES
    from r1distill.report.config import ReportConfig
    from r1distill.rewards import ACCURACY_MODES, LANGUAGE_SCRIPTS
    from r1distill.rewards.judge import JUDGE_BACKENDS, JUDGE_WHEN
    from r1distill.rl import config as rl
    from r1distill.suites import BENCHMARKS
    from r1distill.synth.run import SYNTH_TASKS, SynthConfig
    from r1distill.training.settings import REPORTERS, SCHEDULERS

    generation = {"backend": BACKENDS, "template": TEMPLATES, "prefilled_think": tuple(PREFILLED_THINK), "executor": EXECUTORS}
    resume = "interrupted: rerun with --resume to continue from the last checkpoint"
    stages = [
        StageKind(
            "synth", SynthConfig, "task", "r1distill.synth.run:synth", "r1distill.synth.run:print_summary",
            "Make a prompt table of a synthetic task with exact answers (countdown, arithmetic) or tests (code) for quick R1-Zero runs.",
            "interrupted: nothing useful was written; rerun the same command",
            choices={"task": SYNTH_TASKS}, output_file="problems.jsonl", starts_over=True,
        ),
        StageKind(
            "generate", GenerateConfig, "input", "r1distill.generate.run:generate", "r1distill.generate.run:print_summary",
            """Generate long chain-of-thought traces from a teacher, resumably.

            Every finished completion is journaled at once, so a crash or kill loses only the requests in
            flight; rerunning the same command generates only what is missing. Exit code 1 means some
            requests failed after their retries: they are in OUT with finish_reason 'error' and a reason, and
            a rerun retries them (those the server refused as they are, only with --retry-failed; up to
            --max-failed of the rows refused so do not fail the run).""",
            "interrupted: finished rows are saved; rerun the same command to resume",
            choices=generation, failed_rows=True, references=("input", "model"), inputs=("input",),
        ),
        StageKind(
            "filter", FilterConfig, "input", "r1distill.filter.run:filter_traces", "r1distill.filter.run:print_summary",
            """Score traces with rule rewards, keep the good ones, and write an SFT-ready dataset.

            Every input row is judged by each check (the same rewards `r1distill rl` optimises); rows that
            fail a check, prompts that are duplicates, contaminated or outside the pass-rate band, and samples
            beyond --keep are dropped, each counted under its first reason in stats.json and the card.""",
            "interrupted: nothing was written; rerun the same command",
            choices={
                "checks": CHECKS, "accuracy": ACCURACY_MODES, "language": tuple(LANGUAGE_SCRIPTS), "dedup": DEDUP_MODES,
                "no_think": NO_THINK_STYLES, "judge_backend": JUDGE_BACKENDS, "judge_when": JUDGE_WHEN, "executor": EXECUTORS,
            },
            references=("input", "decontaminate", "non_reasoning"), inputs=("input", "decontaminate", "non_reasoning"), starts_over=True,
        ),
        StageKind(
            "sft", sft.SFTConfig, "input", "r1distill.distill.run:sft", "r1distill.distill.run:print_summary",
            """Fine-tune a student on distilled traces (assistant-only loss, packing, LoRA, resume) with TRL.

            The chat template is checked to keep the reasoning and to prompt at inference exactly as it trained;
            samples longer than --max-length are dropped and counted. OUT receives the student in a plain
            Hugging Face layout (loadable by `r1distill generate --model OUT` and vLLM), checkpoints,
            metrics.jsonl and a model card.""",
            resume,
            choices={"template": sft.TEMPLATES, "lr_scheduler": SCHEDULERS, "report_to": REPORTERS},
            read_recipe=sft.read_recipe, checks_first=True, references=("input", "model"), inputs=("input",),
        ),
        StageKind(
            "rl", rl.RLConfig, "input", "r1distill.rl.run:rl", "r1distill.rl.run:print_summary",
            """Train a policy with GRPO (TRL) on the rule rewards that filter checks, optionally mixed with a reward model.

            R1-Zero on a base model (--template r1-zero) or R1's later RL stages on an sft student (--template
            chat, with --reward language). OUT receives the policy in a plain Hugging Face layout, checkpoints,
            metrics.jsonl (rewards, completion lengths, KL, sample completions) and a model card.""",
            resume,
            choices={
                "rewards": rl.REWARDS, "template": rl.TEMPLATES, "accuracy": ACCURACY_MODES, "language": tuple(LANGUAGE_SCRIPTS),
                "loss_type": rl.LOSS_TYPES, "scale_rewards": rl.SCALE_REWARDS, "vllm_mode": rl.VLLM_MODES,
                "lr_scheduler": SCHEDULERS, "report_to": REPORTERS, "judge_backend": ("openai",), "judge_when": JUDGE_WHEN,
            },
            read_recipe=rl.read_recipe, checks_first=True, references=("input", "model", "reward_model"), inputs=("input",),
        ),
        StageKind(
            "distill", onpolicy.DistillConfig, "input", "r1distill.onpolicy.run:distill", "r1distill.onpolicy.run:print_summary",
            """On-policy distillation (TRL's DistillationTrainer): the student writes, the teacher scores every token of it.

            The loss is the divergence between the student's and the teacher's next-token distributions on the
            student's own completions (--beta 1: reverse KL); teacher and student must share a tokenizer. Use it
            after or instead of `r1distill sft` (which imitates the teacher's sampled traces). OUT receives the
            student in a plain Hugging Face layout, checkpoints, metrics.jsonl and a model card.""",
            resume,
            choices={"template": onpolicy.TEMPLATES, "accuracy": ACCURACY_MODES, "vllm_mode": onpolicy.VLLM_MODES,
                     "lr_scheduler": SCHEDULERS, "report_to": REPORTERS},
            read_recipe=onpolicy.read_recipe, checks_first=True, references=("input", "model", "teacher"), inputs=("input",),
        ),
        StageKind(
            "eval", EvalConfig, "benchmark", "r1distill.eval.run:evaluate", "r1distill.eval.run:print_summary",
            """Evaluate models on a reasoning benchmark: pass@k, maj@k and accuracy against thinking tokens.

            Samples are generated through the generate stage (same backends, resumable: rerun the same command
            after a crash; a larger -n adds only the new samples) and scored with filter's accuracy check.
            OUT receives samples.parquet (every sample with its verdict) and results.json (every setting that
            changes a score, every metric per model and group). Exit code 1 means some requests failed after
            their retries (left out of the scores; rerun to retry them), beyond the --max-failed share of
            requests the server refused for good.""",
            "interrupted: finished samples are saved; rerun the same command to resume",
            choices={**generation, "accuracy": (*EVAL_CHECKS, "judge"), "like": tuple(BENCHMARKS),
                     "judge_backend": JUDGE_BACKENDS, "judge_when": JUDGE_WHEN},
            failed_rows=True, references=("benchmark", "models", "completions", "compare"), inputs=("completions", "compare"),
        ),
        StageKind(
            "report", ReportConfig, "inputs", "r1distill.report.run:report", "r1distill.report.run:print_summary",
            """Write one self-contained HTML report over the outputs of generate, filter, sft, rl and eval.

            Each folder's stage is told by its files; every section shows what its stage wrote: trace lengths
            and examples, the filter funnel, training curves and sample completions, the eval comparison and
            the test-time scaling curve. Plots are embedded and nothing is fetched: the file opens offline.""",
            "interrupted: the report was not written; rerun the same command",
            prints_result=True, output_file="report.html", references=("inputs",), inputs=("inputs",), starts_over=True,
        ),
    ]
    return {stage.name: stage for stage in stages}
