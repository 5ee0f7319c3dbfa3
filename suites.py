"""The public benchmarks by short name: what eval scores and what filter decontaminates against.

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
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from r1distill.errors import UsageError, first_line
from r1distill.schema import stable_id


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
