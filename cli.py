"""The `r1distill` command: thin Typer commands that parse options and call the stage functions.

Every command runs its stage inside `_edges`: a `UsageError` (bad input or options) and a full or
read-only disk become one line on stderr and exit code 2, a `StageError` (a run that cannot go on)
one line and exit code 1, Ctrl-C one line and exit code 130; never a traceback.
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from r1distill import __version__
from r1distill.backends import BACKENDS
from r1distill.cluster import EXECUTORS
from r1distill.distill.config import SFTConfig, read_recipe
from r1distill.distill.config import TEMPLATES as SFT_TEMPLATES
from r1distill.errors import StageError, UsageError, first_line
from r1distill.eval.benchmarks import BENCHMARKS
from r1distill.eval.config import EVAL_CHECKS, EvalConfig
from r1distill.filter.run import CHECKS, DEDUP_MODES, NO_THINK_STYLES, FilterConfig
from r1distill.generate.prompts import TEMPLATES
from r1distill.generate.config import PREFILLED_THINK, GenerateConfig
from r1distill.report.config import ReportConfig
from r1distill.rewards import ACCURACY_MODES, LANGUAGE_SCRIPTS, TASKS
from r1distill.rewards.judge import JUDGE_BACKENDS, JUDGE_WHEN
from r1distill.rl import config as rl_config
from r1distill.rl.config import RLConfig
from r1distill.pipeline.run import RunConfig
from r1distill.redact import redact_text, strip_controls
from r1distill.synth.run import SYNTH_TASKS, SynthConfig
from r1distill.training.settings import REPORTERS, SCHEDULERS

app = typer.Typer(
    help="R1-style reasoning distillation: teacher traces, rule rewards, rejection sampling, SFT and GRPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would eat bracketed text such as "[default: ...]".
    rich_markup_mode=None,
)

def _error(message: str) -> None:
    """The one `error:` line on stderr: credentials redacted and control characters removed (redact.py),
    since a message may quote a server, a model or a mistyped option holding a password."""
    typer.echo(f"error: {strip_controls(redact_text(message))}", err=True)


def _fail(message: str) -> None:
    _error(message)
    raise typer.Exit(2)


# A disk that is full, read-only or not ours: the user fixes these, so they are one line, not a bug's traceback.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG})
_DISK_MESSAGES = ("No space left on device", "Read-only file system", "Permission denied", "Disk quota exceeded", "File too large")


@contextmanager
def _edges(output: Path, interrupted: str) -> Iterator[None]:
    """Run a stage with the CLI's error contract (see the module docstring); `interrupted` is the Ctrl-C line."""
    try:
        yield
    except UsageError as err:
        _fail(str(err))
    except StageError as err:
        _error(first_line(err))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(interrupted, err=True)
        raise typer.Exit(130) from None
    except OSError as err:
        if err.errno not in _DISK_ERRNOS and not any(text in str(err) for text in _DISK_MESSAGES):
            raise
        where = err.filename or output
        _fail(f"{where}: {err.strerror or first_line(err)}; free some space or choose another -o, then rerun the same command")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"r1distill {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from r1distill.console import setup_logging
    from r1distill.processes import follow_owner

    setup_logging(verbose)
    follow_owner()


def _field_docs(config: type) -> dict[str, str]:
    """The one-line doc under each field of a settings dataclass: the single source of its --help text."""
    docs: dict[str, str] = {}
    for klass in reversed(config.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _options(config: type, argument: str, choices: dict[str, tuple[str, ...]]) -> list[inspect.Parameter]:
    """Typer parameters for every field of `config` but `command` and those marked `metadata={"cli": False}`:
    an option is written once, in the dataclass.

    The field's type and default become the option's, its doc the help text, `choices` are listed in
    the help, and the field's `metadata={"flags": (...)}` replace the default `--field-name` (a list
    field is repeated: `--check accuracy --check format`).
    """
    docs = _field_docs(config)
    hints = typing.get_type_hints(config)
    params = []
    # The stage's own fields first (input, output, model...), then those it shares (generation settings).
    own = vars(config).get("__annotations__", {})
    for field in sorted(dataclasses.fields(config), key=lambda field: field.name not in own):
        if field.name == "command" or not field.metadata.get("cli", True):
            continue
        kind = hints[field.name]
        optional = type(None) in typing.get_args(kind)
        if optional:
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        help = docs[field.name]
        if field.name in choices:
            # Named in the help, checked by the settings' own check(), so that every bad option of a
            # command is reported together in one line (a parser-level choice would stop at the first).
            help += f" Choices: {', '.join(choices[field.name])}."
        if optional:
            kind = Optional[kind]
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory() or None  # an empty list shows as no default
        else:
            default = inspect.Parameter.empty
        if field.name == argument:
            info = typer.Argument(help=help, metavar=field.name.upper(), show_default=False)
        else:
            declared = field.metadata.get("flags", ("--" + field.name.replace("_", "-"),))
            info = typer.Option(*declared, help=help, show_default=default not in (None, inspect.Parameter.empty))
        params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, info]))
    return params


def _stage_command(
    config: type, *, argument: str, choices: dict, recipe: Callable[[str], dict] | None = None
) -> Callable[[Callable], Callable]:
    """Turn `body(cfg)` into a Typer command whose options are the fields of `config` (see `_options`).

    With `recipe` (a reader of a settings file), the command also takes `--config FILE`: the file's
    settings replace the defaults, and options typed on the command line win over the file.
    """
    params = _options(config, argument, choices)
    if recipe is not None:
        info = typer.Option("--config", help="YAML recipe of settings (any option above, with _ for -); options given here win over it.", show_default=False)
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], info]))
    # A repeatable option left out arrives as None; the dataclass's own default (a list) applies then.
    listed = {field.name for field in dataclasses.fields(config) if field.default_factory is not dataclasses.MISSING}
    # The command line is recorded by stages that write it into what they make (a model card, a manifest).
    records_command = "command" in {field.name for field in dataclasses.fields(config)}

    def decorate(body: Callable) -> Callable:
        def command(**options) -> None:
            from typer._click.core import ParameterSource
            from typer._click.globals import get_current_context

            recipe_file = options.pop("config", None)
            given = {name: value for name, value in options.items() if value is not None or name not in listed}
            if recipe_file is not None:
                try:
                    settings = recipe(recipe_file)
                except UsageError as err:
                    _fail(str(err))
                context = get_current_context()
                typed = {name for name in given if context.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
                given = {**given, **settings, **{name: given[name] for name in typed}}
            if records_command:
                given["command"] = ["r1distill", *sys.argv[1:]]
            body(config(**given))

        command.__name__, command.__doc__ = body.__name__.rstrip("_"), body.__doc__
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {param.name: param.annotation for param in params}
        return command

    return decorate


@app.command()
@_stage_command(
    GenerateConfig,
    argument="input",
    choices={"backend": BACKENDS, "template": TEMPLATES, "prefilled_think": tuple(PREFILLED_THINK), "executor": EXECUTORS},
)
def generate(cfg: GenerateConfig) -> None:
    """Generate long chain-of-thought traces from a teacher, resumably.

    Every finished completion is journaled at once, so a crash or kill loses only the requests in
    flight; rerunning the same command generates only what is missing. Exit code 1 means some
    requests failed after their retries: they are in OUT with finish_reason 'error' and a reason, and
    a rerun retries them (those the server refused as they are, only with --retry-failed; up to
    --max-failed of the rows refused so do not fail the run).
    """
    from r1distill.generate.run import generate as run_generate
    from r1distill.generate.run import print_summary

    with _edges(Path(cfg.output), "interrupted: finished rows are saved; rerun the same command to resume"):
        summary = run_generate(cfg)
    print_summary(summary)
    problem = summary.failures.problem(cfg.max_failed)
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)


@app.command(name="filter")
@_stage_command(
    FilterConfig,
    argument="input",
    choices={
        "checks": CHECKS, "accuracy": ACCURACY_MODES, "language": tuple(LANGUAGE_SCRIPTS), "dedup": DEDUP_MODES,
        "no_think": NO_THINK_STYLES, "judge_backend": JUDGE_BACKENDS, "judge_when": JUDGE_WHEN, "executor": EXECUTORS,
    },
)
def filter_(cfg: FilterConfig) -> None:
    """Score traces with rule rewards, keep the good ones, and write an SFT-ready dataset.

    Every input row is judged by each check (the same rewards `r1distill rl` optimises); rows that
    fail a check, prompts that are duplicates, contaminated or outside the pass-rate band, and samples
    beyond --keep are dropped, each counted under its first reason in stats.json and the card.
    """
    from r1distill.filter.run import filter_traces, print_summary

    with _edges(Path(cfg.output), "interrupted: nothing was written; rerun the same command"):
        summary = filter_traces(cfg)
    print_summary(summary)


@app.command()
@_stage_command(
    SFTConfig,
    argument="input",
    choices={"template": SFT_TEMPLATES, "lr_scheduler": SCHEDULERS, "report_to": REPORTERS},
    recipe=read_recipe,
)
def sft(cfg: SFTConfig) -> None:
    """Fine-tune a student on distilled traces (assistant-only loss, packing, LoRA, resume) with TRL.

    The chat template is checked to keep the reasoning and to prompt at inference exactly as it trained;
    samples longer than --max-length are dropped and counted. OUT receives the student in a plain
    Hugging Face layout (loadable by `r1distill generate --model OUT` and vLLM), checkpoints,
    metrics.jsonl and a model card.
    """
    with _edges(Path(cfg.output), "interrupted: rerun with --resume to continue from the last checkpoint"):
        cfg.check()  # before the trainer's modules load: without the training extra, one line that names it
        from r1distill.distill.run import print_summary
        from r1distill.distill.run import sft as run_sft

        summary = run_sft(cfg)
    print_summary(summary)


@app.command(name="eval")
@_stage_command(
    EvalConfig,
    argument="benchmark",
    choices={"backend": BACKENDS, "template": TEMPLATES, "prefilled_think": tuple(PREFILLED_THINK), "accuracy": (*EVAL_CHECKS, "judge"), "like": tuple(BENCHMARKS),
             "judge_backend": JUDGE_BACKENDS, "judge_when": JUDGE_WHEN, "executor": EXECUTORS},
)
def eval_(cfg: EvalConfig) -> None:
    """Evaluate models on a reasoning benchmark: pass@k, maj@k and accuracy against thinking tokens.

    Samples are generated through the generate stage (same backends, resumable: rerun the same command
    after a crash; a larger -n adds only the new samples) and scored with filter's accuracy check.
    OUT receives samples.parquet (every sample with its verdict) and results.json (every setting that
    changes a score, every metric per model and group). Exit code 1 means some requests failed after
    their retries (left out of the scores; rerun to retry them), beyond the --max-failed share of
    requests the server refused for good.
    """
    from r1distill.eval.run import evaluate, print_summary

    with _edges(Path(cfg.output), "interrupted: finished samples are saved; rerun the same command to resume"):
        summary = evaluate(cfg)
    print_summary(summary)
    problem = summary.failures.problem(cfg.max_failed)
    if problem:
        typer.echo(problem, err=True)
        raise typer.Exit(1)


@app.command()
@_stage_command(
    RLConfig,
    argument="input",
    choices={
        "rewards": rl_config.REWARDS, "template": rl_config.TEMPLATES, "accuracy": ACCURACY_MODES, "language": tuple(LANGUAGE_SCRIPTS),
        "loss_type": rl_config.LOSS_TYPES, "scale_rewards": rl_config.SCALE_REWARDS, "vllm_mode": rl_config.VLLM_MODES,
        "lr_scheduler": SCHEDULERS, "report_to": REPORTERS, "judge_backend": ("openai",), "judge_when": JUDGE_WHEN,
    },
    recipe=rl_config.read_recipe,
)
def rl(cfg: RLConfig) -> None:
    """Train a policy with GRPO (TRL) on the rule rewards that filter checks, optionally mixed with a reward model.

    R1-Zero on a base model (--template r1-zero) or R1's later RL stages on an sft student (--template
    chat, with --reward language). OUT receives the policy in a plain Hugging Face layout, checkpoints,
    metrics.jsonl (rewards, completion lengths, KL, sample completions) and a model card.
    """
    with _edges(Path(cfg.output), "interrupted: rerun with --resume to continue from the last checkpoint"):
        cfg.check()  # before the trainer's modules load: without the training extra, one line that names it
        from r1distill.rl.run import print_summary
        from r1distill.rl.run import rl as run_rl

        summary = run_rl(cfg)
    print_summary(summary)


@app.command()
@_stage_command(SynthConfig, argument="task", choices={"task": SYNTH_TASKS})
def synth(cfg: SynthConfig) -> None:
    """Make a prompt table of a synthetic task with exact answers (countdown, arithmetic) or tests (code) for quick R1-Zero runs."""
    from r1distill.synth.run import synth as run_synth

    with _edges(Path(cfg.output), "interrupted: nothing useful was written; rerun the same command"):
        count = run_synth(cfg)
    typer.echo(f"{count} {cfg.task} problems → {cfg.output}", err=True)


@app.command(name="run")
@_stage_command(RunConfig, argument="recipe", choices={})
def run_(cfg: RunConfig) -> None:
    """Run a recipe: its stages (synth, generate, filter, sft, rl, eval, report) in order into RUN_DIR.

    Each stage writes RUN_DIR/<stage>. Rerunning skips finished stages, resumes an unfinished one (kept
    samples, last checkpoint) and redoes a stage whose settings changed and every stage after it. The
    whole recipe is checked before any stage starts. The report's path is printed at the end.
    """
    from r1distill.pipeline.run import print_summary, run_pipeline

    with _edges(Path(cfg.output or "."), "interrupted: finished stages and samples are kept; rerun the same command to resume"):
        summary = run_pipeline(cfg)
    print_summary(summary)
    for report in summary.reports:
        typer.echo(report)


@app.command()
@_stage_command(ReportConfig, argument="inputs", choices={})
def report(cfg: ReportConfig) -> None:
    """Write one self-contained HTML report over the outputs of generate, filter, sft, rl and eval.

    Each folder's stage is told by its files; every section shows what its stage wrote: trace lengths
    and examples, the filter funnel, training curves and sample completions, the eval comparison and
    the test-time scaling curve. Plots are embedded and nothing is fetched: the file opens offline.
    """
    from r1distill.report.run import report as write_report

    with _edges(Path(cfg.output), "interrupted: the report was not written; rerun the same command"):
        path = write_report(cfg)
    typer.echo(str(path))


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="A `r1distill filter` or `generate` output folder.", metavar="DIR", show_default=False)],
    repo_id: Annotated[str, typer.Option(help="Dataset repository on the Hub, like 'user/name'.", show_default=False)],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
) -> None:
    """Upload an output folder to the Hugging Face Hub as a dataset repository.

    Only the files the stages write are uploaded (Parquet data, README.md, stats.json, manifests,
    results.json); the journal and anything else in the folder stay here. The token comes from
    HF_TOKEN or `hf auth login` and is never printed.
    """
    from r1distill.hub import push as push_folder

    with _edges(folder, "interrupted: the upload stopped; rerun the same command"):
        url = push_folder(folder, repo_id, private)
    typer.echo(url)


def run() -> None:
    """The `r1distill` entry point: the app, with the parser's own errors (unknown option, a value of
    the wrong type) as one line and exit code 2 like every other bad input."""
    # Typer vendors Click as typer._click; its exceptions are public there only.
    from typer._click import exceptions as parser

    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except parser.NoArgsIsHelpError as err:
        typer.echo(err.format_message())
        code = 0
    except parser.UsageError as err:
        command = err.ctx.command_path if err.ctx else "r1distill"
        _error(f"{' '.join(err.format_message().split())} (see {command} --help)")
        code = 2
    except typer.Abort:
        typer.echo("interrupted", err=True)
        code = 130
    except typer.Exit as done:
        code = done.exit_code
    sys.exit(code or 0)


if __name__ == "__main__":
    run()
