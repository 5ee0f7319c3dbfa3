"""A pipeline recipe: the stages `r1distill run` runs, in order, with their options, all checked up front.

    output: runs/quickstart          # RUN_DIR, unless -o gives one
    stages:
      prompts:                       # a stage's name; its output is RUN_DIR/prompts
        stage: synth                 # its kind (default: the name): synth, generate, filter, sft, distill, rl, eval, report
        task: arithmetic
        n: 64
      generate:
        input: prompts               # an earlier stage's name stands for its output
        num-samples: 4               # the CLI's option names (-n, --num-samples, num_samples alike)
      filter:
        input: generate
        check: [accuracy]            # a repeatable option takes a list
      sft:
        input: filter
        config: recipes/sft/qwen2.5-math-7b.yaml           # sft and rl: a settings file, as --config
        accelerate: recipes/accelerate/zero3.yaml          # sft and rl: run under `accelerate launch`

With `executor: slurm` at the top, each stage is a Slurm job (pipeline/slurm.py); a stage's `slurm:`
mapping gives its resources (`slurm: {cpus: 8, mem: 64G, time: "12:00:00", gres: "gpu:8"}`, and for
generate `array: N`, N array tasks each on part of the prompts). `executor: local` (the default) runs
the stages here, one after another, and ignores `slurm:`. With `executor: ray` (and `ray-address:`,
else a local cluster), each stage is a Ray task placed by its `ray: {cpus, gpus, memory}` (pipeline/on_ray.py).

Each stage's options become its settings dataclass, the one the CLI builds, so the names, types and
checks are the CLI's. Everything a run could trip over is found here, before any stage starts: an
unknown stage kind or option, a value of the wrong type, a name that is not an earlier stage and not
an existing input, and every problem the stage's own `check()` finds.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1distill import requirements
from r1distill.errors import UsageError, first_line
from r1distill.pipeline.on_ray import RayResources
from r1distill.pipeline.slurm import Resources
from r1distill.stages import StageKind, registry


EXECUTORS = ("local", "slurm", "ray")
STATE_FILE = "pipeline.json"
"""RUN_DIR/pipeline.json: the runner's record of the stages it made (see run.py)."""
# A stage's folder is RUN_DIR/<name>: a name such as `..` or `.` would point elsewhere, a leading dot
# is the runner's temporary files' (files.py), and the runner's own file names are its to write.
# ASCII only: a name that looks alike in another script is not a different folder to the reader.
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RUNNER_FILES = (STATE_FILE,)
# Set by the runner for every stage: where it writes, and the command recorded in what it makes.
_RUNNER_SETS = ("output", "command")
# A stage's own resume switch: the runner sets it when it continues an unfinished stage.
RESUME = "resume"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(:\w+)?")  # org/name, and filter's org/name:COLUMN
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".yaml", ".txt")


@dataclass
class Stage:
    """One stage of a recipe, checked: its settings are ready to run."""

    name: str
    kind: str
    settings: Any
    """The stage's settings dataclass (SynthConfig, GenerateConfig, ...), references resolved."""
    output: Path
    """What later stages receive for its name: RUN_DIR/<name>, or the file it writes in there."""
    folder: Path
    """RUN_DIR/<name>: everything the stage writes is in it."""
    accelerate: str | None = None
    """sft and rl: an `accelerate launch` config file; the stage then runs in processes of its own."""
    slurm: Resources = dataclasses.field(default_factory=Resources)
    """What the stage's Slurm job asks for, under `executor: slurm`."""
    ray: RayResources = dataclasses.field(default_factory=RayResources)
    """What the stage's Ray task asks for, under `executor: ray`."""


@dataclass
class Recipe:
    path: Path
    run_dir: Path
    stages: list[Stage]
    executor: str = "local"
    """local (the stages run in this process), slurm (each stage an sbatch job, pipeline/slurm.py) or ray
    (each stage a Ray task, pipeline/on_ray.py)."""
    ray_address: str | None = None
    """executor ray: the cluster to join; None starts a local one for the run."""


def read(path: str | Path, run_dir: str | None = None) -> Recipe:
    """The recipe at `path`, every stage checked; RUN_DIR is `run_dir`, else the recipe's `output`,
    else runs/<recipe name>. One UsageError lists every problem found."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such recipe file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not valid YAML ({first_line(err)})") from err
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict) or not data["stages"]:
        raise UsageError(f"{path}: expected a mapping with `stages:`, a mapping of stage names to their options (see recipes/quickstart.yaml)")
    unknown = sorted(set(data) - {"output", "stages", "executor", "ray-address", "ray_address"}, key=str)
    if unknown:
        raise UsageError(f"{path}: unknown top-level key(s) {', '.join(map(str, unknown))}; a recipe has `output`, `executor`, `ray-address` and `stages`")
    executor = data.get("executor", "local")
    if executor not in EXECUTORS:
        raise UsageError(f"{path}: executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    ray_address = data.get("ray-address", data.get("ray_address"))
    if ray_address is not None and (executor != "ray" or not isinstance(ray_address, str)):
        raise UsageError(f"{path}: ray-address is the Ray cluster of `executor: ray` (host:6379, ray://host:10001 or auto), got {ray_address!r}"
                         + ("" if executor == "ray" else f" with executor {executor}"))
    root = Path(run_dir or data.get("output") or Path("runs") / path.stem)
    table = registry()
    problems: list[str] = []
    stages: list[Stage] = []
    # Every stage's output, so that a stage naming an earlier one is checked even when that one has problems.
    outputs = {str(name): _output(root / str(name), table.get(str(options.get("stage", name)) if isinstance(options, dict) else ""))
               for name, options in data["stages"].items()}
    for index, (name, options) in enumerate(data["stages"].items()):
        name = str(name)
        try:
            stages.append(_stage(name, options or {}, root, dict(list(outputs.items())[:index]), list(outputs), table, path))
        except UsageError as err:
            problems.append(str(err))
    if problems:
        raise UsageError(f"{path}: " + "; ".join(problems))
    return Recipe(path, root, stages, executor, ray_address)


def _output(folder: Path, kind: StageKind | None) -> Path:
    """What later stages receive for a stage's name: its folder, or the file it writes in there."""
    return folder / kind.output_file if kind is not None and kind.output_file else folder


def _stage(name: str, options: Any, root: Path, earlier: dict[str, Path], names: list[str], table: dict[str, StageKind], path: Path) -> Stage:
    where = f"stage '{name}'"
    if not _STAGE_NAME.fullmatch(name) or name.casefold() in _RUNNER_FILES:
        raise UsageError(
            f"{where}: a stage name starts with a letter or digit, then letters, digits, '_', '-' and '.', "
            f"and is not {', '.join(_RUNNER_FILES)} (it names the folder RUN_DIR/<name>, beside the runner's own files)"
        )
    if not isinstance(options, dict):
        raise UsageError(f"{where}: expected a mapping of options, got {options!r}")
    options = dict(options)
    kind_name = str(options.pop("stage", name))
    if kind_name not in table:
        raise UsageError(f"{where}: unknown stage kind {kind_name!r}; use one of {', '.join(table)} (as `stage: KIND`, or as the stage's name)")
    kind = table[kind_name]
    fields = {f.name: f for f in dataclasses.fields(kind.config) if f.metadata.get("cli", True) and f.name not in _RUNNER_SETS}
    aliases = _aliases(fields.values())
    settings: dict[str, Any] = {}
    launcher = options.pop("accelerate", None)
    trainers = ", ".join(other.name for other in table.values() if other.trains)
    if launcher is not None and (not kind.trains or not Path(str(launcher)).is_file()):
        raise UsageError(
            f"{where}: `accelerate` (a launch config such as recipes/accelerate/zero3.yaml) is taken by {trainers} only"
            if not kind.trains else f"{where}: accelerate {launcher!r}: no such file"
        )
    resources = options.pop("slurm", None)
    ray_resources = options.pop("ray", None)
    recipe_file = options.pop("config", None)
    if recipe_file is not None:
        if not kind.trains:
            raise UsageError(f"{where}: `config` (a settings file) is taken by {trainers} only")
        settings.update(kind.read_recipe(str(recipe_file)))
    hints = typing.get_type_hints(kind.config)
    problems = []
    try:
        slurm = Resources.read(resources, kind_name, where)
    except UsageError as err:
        problems.append(str(err))
    try:
        ray = RayResources.read(ray_resources, where)
    except UsageError as err:
        problems.append(str(err))
    for key, value in options.items():
        field = aliases.get(str(key).lstrip("-").replace("-", "_"))
        if field is None:
            runner_set = str(key).lstrip("-").replace("-", "_") in ("output", "o", "command")
            problems.append(
                f"{where}: {key!r} is set by the runner (RUN_DIR/{name})" if runner_set
                else f"{where}: unknown option {key!r} for {kind_name}; see `r1distill {kind_name} --help`"
            )
            continue
        if field == RESUME:
            problems.append(f"{where}: `resume` is the runner's to set (a rerun resumes unfinished stages)")
            continue
        try:
            settings[field] = _resolve(field, value, hints[field], kind, earlier, names, name, where)
        except UsageError as err:
            problems.append(str(err))
    folder = root / name
    output = _output(folder, kind)
    if not problems:
        settings["output"] = str(output)
        if "command" in {f.name for f in dataclasses.fields(kind.config)}:
            settings["command"] = ["r1distill", "run", str(path), f"# stage {name}"]
        try:
            config = kind.config(**settings)
        except TypeError as err:
            missing = re.findall(r"'(\w+)'", str(err))
            problems.append(f"{where}: missing option {', '.join(missing) or first_line(err)}")
        else:
            # The stage's own checks, on a copy writing nowhere: RUN_DIR/<name> is the runner's to
            # skip, resume or clear, so what is in it now is not a problem of the options.
            probe = dataclasses.replace(config, output=str(root / ".unused" / name / (kind.output_file or "")))
            try:
                if hasattr(probe, "check"):
                    probe.check()
            except UsageError as err:
                problems.append(f"{where}: {err}")
            problems += [f"{where}: {problem}" for problem in requirements.missing(None, launcher)]
            if not problems:
                return Stage(name, kind_name, config, output, folder, None if launcher is None else str(launcher), slurm, ray)
    raise UsageError("; ".join(problems))


def _aliases(fields) -> dict[str, str]:
    """Every name an option may be given by in a recipe: the field, and its flags without dashes."""
    aliases = {}
    for field in fields:
        aliases[field.name] = field.name
        for flag in field.metadata.get("flags", ()):
            aliases[flag.split("/")[0].lstrip("-").replace("-", "_")] = field.name
    return aliases


def _resolve(field: str, value: Any, hint: Any, kind: StageKind, earlier: dict[str, Path], names: list[str], name: str, where: str) -> Any:
    """The option's value as its field's type, with earlier stages' names replaced by their outputs."""
    from r1distill.training.recipe import coerce

    value = coerce(value, hint, f"{where}: {field}")
    if field not in kind.references:
        return value

    def one(item: str) -> str:
        if item in earlier:
            return str(earlier[item])
        if item in names:
            raise UsageError(f"{where}: {field} {item!r} is a stage that runs later; a stage may only use earlier stages' outputs")
        if field in kind.inputs and not _exists(item):
            raise UsageError(f"{where}: {field} {item!r} is neither an earlier stage nor an existing file or folder")
        return item

    if isinstance(value, list):
        return [one(item) for item in value]
    return one(value) if isinstance(value, str) else value


def _exists(value: str) -> bool:
    """A local path that exists, or a Hub dataset id (checked when the stage reads it, not here)."""
    if Path(value).exists():
        return True
    return bool(_HUB_ID.fullmatch(value)) and not value.endswith(_DATA_SUFFIXES)
