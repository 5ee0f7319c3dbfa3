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
from r1distill.errors import StageError, UsageError, first_line
from r1distill.pipeline.run import RunConfig
from r1distill.redact import redact_text, strip_controls
from r1distill.stages import StageKind, registry

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


def _stage_body(kind: StageKind) -> Callable:
    """The command of one registered stage: checked, run and summarised within the CLI's edges."""

    def body(cfg) -> None:
        with _edges(Path(cfg.output), kind.interrupted):
            if kind.checks_first:
                cfg.check()  # before the trainer's modules load: without the training extra, one line that names it
            result = kind.call(cfg)
        kind.show(result)
        if kind.prints_result:
            typer.echo(str(result))
        if kind.failed_rows and (problem := result.failures.problem(cfg.max_failed)):
            typer.echo(problem, err=True)
            raise typer.Exit(1)

    body.__name__, body.__doc__ = kind.name, kind.help
    return body


for _kind in registry().values():
    app.command(name=_kind.name)(_stage_command(_kind.config, argument=_kind.argument, choices=_kind.choices, recipe=_kind.read_recipe)(_stage_body(_kind)))


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
