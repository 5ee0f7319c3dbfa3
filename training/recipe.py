"""Recipes: a YAML mapping of a stage's settings (`--config recipe.yaml`), checked before anything runs.

Each key must be a field of the stage's settings dataclass (with _ for -) and is converted to that
field's type; options typed on the command line win over the file (see cli.py). A stage may accept
more keys (`rl` takes any other GRPOConfig field) through `extra`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from pathlib import Path

from r1distill.errors import UsageError, first_line

# Given on the command line or recorded by it, never in a recipe.
NOT_IN_RECIPES = ("input", "output", "command")


def recipe_fields(config) -> list[str]:
    """The settings a --config recipe may give for the settings dataclass (or instance) `config`."""
    # A field hidden from the command line (metadata cli=False) is filled by the stage, not by a recipe.
    return [f.name for f in dataclasses.fields(config) if f.metadata.get("cli", True) and f.name not in NOT_IN_RECIPES]


def read_recipe(path: str | Path, config: type, stage: str, extra: Callable[[str, dict], dict] | None = None) -> dict:
    """The settings in the YAML file `path`, each checked to be a field of `config` and of its type.

    `extra(path, unknown)` receives the keys that are not fields and returns the settings they make
    (raising UsageError for those it refuses); without it they are refused here.
    """
    import yaml

    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"--config {path}: not valid YAML ({first_line(err)})") from err
    if not isinstance(recipe, dict):
        raise UsageError(f"--config {path}: expected a mapping of settings (max_steps: 100, ...)")
    names = set(recipe_fields(config))
    unknown = {str(key): value for key, value in recipe.items() if key not in names}
    if unknown and extra is None:
        raise UsageError(f"--config {path}: unknown setting(s) {', '.join(sorted(unknown))}; use the fields of `r1distill {stage} --help` with _ for -")
    hints = typing.get_type_hints(config)
    settings = {key: coerce(value, hints[key], f"--config {path}: {key}") for key, value in recipe.items() if key in names}
    if unknown:
        settings.update(extra(str(path), unknown))
    return settings


def coerce(value, kind, where: str):
    """`value` as the field type `kind`; YAML reads 4e-5 as text, so numbers given as text are accepted."""
    args = typing.get_args(kind)
    if value is None:
        if type(None) in args:
            return None
        raise UsageError(f"{where} cannot be null")
    if type(None) in args:
        kind = next(arg for arg in args if arg is not type(None))
    if typing.get_origin(kind) is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(item, typing.get_args(kind)[0], where) for item in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        return _integer(value, where)
    try:
        coerced = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where} must be {kind.__name__}, got {value!r}") from None
    # YAML's .nan and .inf are floats, and no rate, share or temperature a stage takes is either.
    if kind is float and not math.isfinite(coerced):
        raise UsageError(f"{where} must be a finite number, got {value!r}")
    return coerced


# Past 2**53 a float skips whole numbers, so 1e99 (or 12345678901234567891 read as a float) would not
# be the count the recipe wrote; no count, step or seed a stage takes comes near it.
LARGEST_INT = 2**53


def _integer(value, where: str) -> int:
    """`value` as a whole number: an int, a float without a fraction, or text of either, up to LARGEST_INT in size.

    >>> _integer("4e3", "n"), _integer(64.0, "n")
    (4000, 64)
    >>> _integer("1e99", "stage 'prompts': n")
    Traceback (most recent call last):
    r1distill.errors.UsageError: stage 'prompts': n must be a whole number of at most 2**53 in size, got '1e99'
    """
    number = value
    if isinstance(number, str):
        try:
            number = int(number)
        except ValueError:
            try:
                number = float(number)
            except ValueError:
                number = None
    # A float without a fraction (YAML reads 1e3 as text, 1.0e3 as a float); nan and inf have none.
    if isinstance(number, float) and number.is_integer():
        number = int(number) if abs(number) <= LARGEST_INT else LARGEST_INT + 1
    if isinstance(number, bool) or not isinstance(number, int):
        raise UsageError(f"{where} must be int, got {value!r}")
    if abs(number) > LARGEST_INT:
        raise UsageError(f"{where} must be a whole number of at most 2**53 in size, got {value!r}")
    return number


def trainer_arguments(cfg) -> dict:
    """The TrainingArguments that sft and rl set the same way from their settings (same field names).

    bf16 on GPUs that have it (fp32 on the CPU); no tqdm, r1distill's TrainProgress draws the bar.
    """
    import torch
    from transformers import TrainingArguments

    # transformers 5.23 renamed gradient_checkpointing (kept as a deprecated alias until v6); the images on
    # GPU machines often lag behind (the device check's has 5.17), and there only the old name exists.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    return {
        "output_dir": cfg.output,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": cfg.lr_scheduler,
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1} if cfg.lr_scheduler == "cosine_with_min_lr" else None,
        "warmup_steps": cfg.warmup_ratio,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps or -1,
        checkpointing: cfg.gradient_checkpointing,
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "report_to": cfg.report_to or "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": torch.cuda.is_available(),
    }
