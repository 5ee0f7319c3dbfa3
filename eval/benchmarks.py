"""What eval reads: a benchmark as a prompt table with gold answers, or a table of completions made elsewhere.

Short names resolve to the public Hub datasets the R1 papers and their reproductions report on, with
the columns, gold extraction and answer check each needs; `--like NAME` reads a local copy the same way.

| name | Hub dataset (config, split) | problem / answer | check |
|---|---|---|---|
| math500 | HuggingFaceH4/MATH-500 (test) | problem / answer | math |
| aime24 | HuggingFaceH4/aime_2024 (train) | problem / answer | math |
| aime25 | math-ai/aime25 (test) | problem / answer | math |
| amc23 | math-ai/amc23 (test) | question / answer | math |
| gsm8k | openai/gsm8k (main, test) | question / the number after `####` | math |
| gpqa-diamond | Idavidrein/gpqa (gpqa_diamond, train; gated) | Question with its 4 choices shuffled / the letter | choice |

GPQA lists the correct answer first; each question's choices are shuffled by a generator seeded with
the question text, so every run, machine and model sees the same order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from r1distill.data import NUMBER, TEXT, VALUE, check_columns, prompt_table, read_table
from r1distill.errors import UsageError, first_line
from r1distill.schema import ANSWER, PROBLEM, PROMPT_ID, scan_shards, stable_id


def _gsm8k_gold(frame: pl.DataFrame, problem: str, answer: str) -> pl.DataFrame:
    r"""GSM8K's answer is a worked solution ending in `#### 18`: the gold is that number, without thousands commas."""
    gold = pl.col(answer).cast(pl.String).str.split("####").list.last().str.strip_chars().str.replace_all(",", "")
    return frame.with_columns(gold.alias(answer))


_GPQA_WRONG = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def _gpqa_choices(frame: pl.DataFrame, problem: str, answer: str) -> pl.DataFrame:
    """GPQA's question with its four answers as lettered choices in a fixed shuffled order; the gold is the letter."""
    missing = [column for column in _GPQA_WRONG if column not in frame.columns]
    if missing:
        raise UsageError(f"GPQA needs the columns {', '.join(_GPQA_WRONG)} beside '{answer}'; missing: {', '.join(missing)}")
    problems, letters = [], []
    for question, right, *wrong in frame.select(problem, answer, *_GPQA_WRONG).iter_rows():
        choices = [str(right).strip(), *(str(w).strip() for w in wrong)]
        order = list(range(4))
        random.Random(stable_id(str(question))).shuffle(order)
        lines = [f"{'ABCD'[i]}) {choices[j]}" for i, j in enumerate(order)]
        problems.append(f"{str(question).strip()}\n\n" + "\n".join(lines))
        letters.append("ABCD"[order.index(0)])
    return frame.with_columns(pl.Series(problem, problems), pl.Series(answer, letters))


@dataclass(frozen=True)
class Benchmark:
    """How a public benchmark is read."""

    hub: str
    """Hub dataset id."""
    config: str | None
    """Dataset config name, if it has several."""
    split: str
    """The split that holds the benchmark."""
    problem: str
    """Column with the problem."""
    answer: str
    """Column with the gold answer (or what `prepare` turns into it)."""
    id: str | None
    """Column with a unique id, if any."""
    accuracy: str
    """The answer check (rewards' accuracy mode)."""
    prepare: Callable[[pl.DataFrame, str, str], pl.DataFrame] | None = None
    """Rewrites the problem and answer columns into what the model sees and the gold."""


# Each entry's split and columns are the ones its dataset card lists (a test checks them against a table).
BENCHMARKS = {
    # https://huggingface.co/datasets/HuggingFaceH4/MATH-500: test.jsonl only (split test); problem, solution, answer, subject, level, unique_id.
    "math500": Benchmark("HuggingFaceH4/MATH-500", None, "test", "problem", "answer", "unique_id", "math"),
    # https://huggingface.co/datasets/HuggingFaceH4/aime_2024 (card's dataset_info): split train only; id, problem, solution, answer, url, year.
    "aime24": Benchmark("HuggingFaceH4/aime_2024", None, "train", "problem", "answer", "id", "math"),
    # https://huggingface.co/datasets/math-ai/aime25: test.jsonl only (split test); id, problem, answer.
    "aime25": Benchmark("math-ai/aime25", None, "test", "problem", "answer", "id", "math"),
    # https://huggingface.co/datasets/math-ai/amc23: test-00000-of-00001.parquet only (split test); id, question, answer, url.
    "amc23": Benchmark("math-ai/amc23", None, "test", "question", "answer", "id", "math"),
    # https://huggingface.co/datasets/openai/gsm8k (card's configs): main and socratic, splits train and test; question, answer.
    "gsm8k": Benchmark("openai/gsm8k", "main", "test", "question", "answer", None, "math", _gsm8k_gold),
    # https://huggingface.co/datasets/Idavidrein/gpqa (gated): config gpqa_diamond is one csv (split train);
    # Question, Correct Answer, Incorrect Answer 1-3, Record ID among its columns.
    "gpqa-diamond": Benchmark("Idavidrein/gpqa", "gpqa_diamond", "train", "Question", "Correct Answer", "Record ID", "choice", _gpqa_choices),
}


def registered(source: str) -> Benchmark | None:
    """The registry entry a short name (aime24) or its Hub id (HuggingFaceH4/aime_2024) names, or None."""
    return BENCHMARKS.get(source) or next((spec for spec in BENCHMARKS.values() if spec.hub == source), None)


def from_hub(spec: Benchmark, split: str) -> pl.DataFrame:
    """The benchmark's split as a table, from the Hub (or its local cache)."""
    import datasets

    try:
        loaded = datasets.load_dataset(spec.hub, spec.config, split=split)
    except Exception as err:
        raise UsageError(f"{spec.hub}: cannot load from the Hugging Face Hub: {first_line(err)}") from err
    return pl.from_arrow(loaded.with_format("arrow")[:])


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
