"""What eval reads: a benchmark as a prompt table with gold answers, or a table of completions made elsewhere.

A short name (math500, aime24...) is read as its suites.BENCHMARKS entry says; `--like NAME` reads a local
copy the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from r1distill.data import NUMBER, TEXT, VALUE, check_columns, prompt_table, read_table
from r1distill.errors import UsageError
from r1distill.schema import ANSWER, PROBLEM, PROMPT_ID, scan_shards, stable_id
from r1distill.suites import BENCHMARKS, from_hub


def load_benchmark(cfg) -> tuple[pl.DataFrame, dict]:
    """The prompt table of `cfg.benchmark` (prompt_id, problem, answer, other columns) and how it was read."""
    short = cfg.benchmark in BENCHMARKS
    spec = BENCHMARKS[cfg.benchmark] if short else BENCHMARKS.get(cfg.like or "")
    split = cfg.split or (spec.split if spec else "test")
    problem = cfg.problem_column or (spec.problem if spec else PROBLEM)
    answer = cfg.answer_column or (spec.answer if spec else ANSWER)
    source = spec.hub if short else cfg.benchmark
    frame = from_hub(spec, split) if short else read_table(source, split, text_column=None if spec and spec.prepare else problem)
    columns = ", ".join(frame.columns)
    for column, option in ((problem, "--problem-column"), (answer, "--answer-column")):
        if column not in frame.columns:
            raise UsageError(f"{source}: no column '{column}' (columns: {columns}); a benchmark needs problems and gold answers: name them with {option}")
    identifier = cfg.id_column or (spec.id if spec and spec.id in frame.columns else None)
    if spec and spec.prepare:
        frame = spec.prepare(frame, problem, answer)
    if cfg.limit:
        frame = frame.head(cfg.limit)
    prompts = prompt_table(frame, source, problem, answer, identifier)
    if prompts[ANSWER].str.strip_chars().fill_null("").eq("").all():
        raise UsageError(f"{source}: column '{answer}' holds no gold answers; name the column that does with --answer-column")
    read = {
        "name": cfg.benchmark if short else Path(cfg.benchmark).name, "source": source, "split": split, "like": cfg.like,
        "config": spec.config if spec else None, "problem_column": problem, "answer_column": answer, "id_column": identifier,
        "limit": cfg.limit, "problems": prompts.height, "accuracy": cfg.rule_mode() or (spec.accuracy if spec else "math"),
    }
    return prompts, read


COMPLETION_COLUMNS = ("problem", "answer", "completion")


def load_completions(cfg) -> pl.DataFrame:
    """The table of `cfg.completions` as eval scores it: model, prompt_id, sample, problem, answer, completion,
    finish_reason, completion_tokens, then the table's other columns.

    Rows of one problem are grouped by `prompt_id` when the table has it, else by the problem text;
    `sample` numbers a problem's rows in table order when absent, `model` is the table's name when absent.
    """
    source = cfg.completions
    frame = read_table(source, cfg.split or "train")
    problem = cfg.problem_column or PROBLEM
    answer = cfg.answer_column or ANSWER
    missing = [column for column in (problem, answer, "completion") if column not in frame.columns]
    if missing:
        raise UsageError(
            f"{source}: no column {', '.join(repr(m) for m in missing)} (columns: {', '.join(frame.columns)}); "
            "completions to score need problem, answer and completion columns (--problem-column, --answer-column)"
        )
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty; give completions to score")
    kinds = {problem: TEXT, answer: VALUE, "completion": TEXT, "finish_reason": TEXT, "completion_tokens": NUMBER, "sample": NUMBER}
    check_columns(frame.schema, kinds | {PROMPT_ID: VALUE, "model": VALUE}, source)
    frame = frame.rename({problem: PROBLEM, answer: ANSWER} if problem != answer else {problem: PROBLEM})
    if frame[ANSWER].cast(pl.String).str.strip_chars().fill_null("").eq("").all():
        raise UsageError(f"{source}: column '{answer}' holds no gold answers; name the column that does with --answer-column")
    if frame[PROBLEM].null_count():
        raise UsageError(f"{source}: column '{problem}' is null at row {int(frame[PROBLEM].is_null().arg_max())}; every row needs its problem")
    defaults = {
        "model": pl.lit(Path(source).name),
        PROMPT_ID: pl.col(PROBLEM).map_elements(stable_id, return_dtype=pl.String),
        "finish_reason": pl.lit(None, pl.String),
        "completion_tokens": pl.lit(None, pl.Int64),
    }
    frame = frame.with_columns(expr.alias(name) for name, expr in defaults.items() if name not in frame.columns)
    frame = frame.with_columns(pl.col(ANSWER).cast(pl.String), pl.col(PROMPT_ID).cast(pl.String), pl.col("model").cast(pl.String))
    if "sample" not in frame.columns:
        frame = frame.with_columns(pl.int_range(pl.len()).over("model", PROMPT_ID).alias("sample"))
    first = ["model", PROMPT_ID, "sample", PROBLEM, ANSWER, "completion", "finish_reason", "completion_tokens"]
    return frame.select(first + [c for c in frame.columns if c not in first])


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(model: str) -> str:
    """A folder name for a model's generations: readable and unique per model name.

    >>> slug("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    'DeepSeek-R1-Distill-Qwen-7B-bc19478a'
    """
    return f"{_SLUG.sub('_', model.rstrip('/').rsplit('/', 1)[-1])[:60]}-{stable_id(model)[:8]}"


def read_traces(folder: Path, prompt_ids: pl.Series, samples: int) -> pl.DataFrame:
    """The rows of a generate output that belong to this eval: its prompts, samples below `samples`."""
    shards = sorted(folder.glob("traces-*.parquet"))
    if not shards:
        return pl.DataFrame()
    rows = scan_shards(shards).filter(pl.col(PROMPT_ID).is_in(prompt_ids.implode()) & (pl.col("sample") < samples)).collect()
    # generate compacts superseded rows away; a run killed before that leaves two, the newer one wins.
    return rows.sort("created_at").unique("id", keep="last").sort(PROMPT_ID, "sample")
