"""Decontamination: drop training problems that share a word n-gram with a benchmark problem.

A student trained on a benchmark's questions scores well on that benchmark for the wrong reason, so
the filter stage drops every problem that shares a run of `n` words (default 8, as in the s1 and
Open-R1 recipes) with any benchmark problem. Words are the lowercase alphanumeric runs of the
NFKC-normalized text: punctuation, LaTeX markup and spacing do not hide a copied question.

All benchmark n-grams go into one dict (n-gram -> benchmark), and each problem's n-grams are looked up
once, so the cost is linear in the total text.

Texts shorter than `n` words have no n-gram; each is one "n-gram" made of all its words instead. A
tuple of k < n words never equals an n-word tuple, so a short text only matches a text with exactly the
same words: "What is 2+2?" in a benchmark flags the problem "what is 2 + 2" and nothing else, never
every problem that contains "what is". The price is that a short benchmark question copied inside a
longer problem is not caught.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

import polars as pl

from r1distill.data import read_table
from r1distill.errors import UsageError
from r1distill.suites import from_hub, registered
from r1distill.schema import PROBLEM, PROMPT_ID

log = logging.getLogger(__name__)

CONTAMINATED = "contaminated"
TEXT_COLUMNS = ("problem", "question", "prompt", "Problem", "Question")

_WORD = re.compile(r"[^\W_]+")


def load_benchmark(source: str, column: str | None = None, split: str = "test") -> tuple[str, list[str]]:
    """The benchmark's name and its problem texts, read with `r1distill.data.read_table`.

    The text column is `column`, else the first of TEXT_COLUMNS the table has. `source` may end in
    ":COLUMN" to name the column ("aime24.jsonl:question", "HuggingFaceH4/MATH-500:problem"); the
    suffix is only read when `column` is not given, `source` itself is not an existing path and the
    suffix holds no path separator, so a path that contains ":" is never split. The name is the file
    or folder stem, or the Hub id. A benchmark of eval's registry (a short name such as aime24, or its Hub
    id) is read with its own config, split and problem column; for any other Hub dataset or save_to_disk
    folder `split` picks the split.
    Rows whose text is null are skipped.
    """
    if column is None and not Path(source).exists():
        head, sep, tail = source.rpartition(":")
        if sep and head and tail and not re.search(r"[/\\]", tail):
            source, column = head, tail
    path = Path(source)
    name = (path.name if path.is_dir() else path.stem) if path.exists() else source
    spec = None if path.exists() else registered(source)
    if spec is not None:
        # A benchmark eval knows (aime24, or its Hub id) is read as eval reads it: its own config and split
        # (HuggingFaceH4/aime_2024 has only train), its problem column.
        frame, column = from_hub(spec, spec.split), column or spec.problem
    else:
        frame = read_table(source, split, text_column=column)
    if frame.height == 0:
        raise UsageError(f"{source}: the benchmark table is empty; give a benchmark with at least one row")
    columns = ", ".join(frame.columns)
    if column is None:
        column = next((c for c in TEXT_COLUMNS if c in frame.columns), None)
        if column is None:
            raise UsageError(
                f"{source}: no problem text column (looked for {', '.join(TEXT_COLUMNS)}; columns: {columns}); "
                f"name it as {source}:COLUMN"
            )
    elif column not in frame.columns:
        raise UsageError(f"{source}: no column '{column}' (columns: {columns}); name the text column as {source}:COLUMN")
    texts = frame[column]
    if texts.dtype != pl.String:
        raise UsageError(f"{source}: column '{column}' must hold text, it holds {texts.dtype}; name the text column as {source}:COLUMN")
    return name, texts.drop_nulls().to_list()


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The word n-grams of `text`, or its whole word sequence when it has fewer than `n` words.

    >>> sorted(ngrams("The SUM: 1+2, twice.", 3))
    [('1', '2', 'twice'), ('sum', '1', '2'), ('the', 'sum', '1')]
    >>> ngrams("What is 2+2?", 8)
    {('what', 'is', '2', '2')}
    >>> ngrams("  ?! ", 8)
    set()
    """
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return set(zip(*(words[start:] for start in range(n))))


def decontaminate(prompts: pl.DataFrame, benchmarks: list[tuple[str, list[str]]], n: int = 8) -> pl.DataFrame:
    """`prompt_id`, `drop_reason` ("contaminated" or null) and `benchmark` for every prompt, in input order.

    `benchmark` names the first benchmark, in the order of `benchmarks`, that shares an n-gram with
    the problem. Counts per benchmark: `result["benchmark"].drop_nulls().value_counts()`.

    >>> prompts = pl.DataFrame({"prompt_id": ["a", "b"], "problem": ["What is 2+2?", "What is 3+3?"]})
    >>> decontaminate(prompts, [("toy", ["what is 2 + 2"])]).rows()
    [('a', 'contaminated', 'toy'), ('b', None, None)]
    """
    if n < 1:
        raise UsageError(f"decontamination n-gram size {n} is out of range; give a word count of at least 1")
    names = [name for name, _ in benchmarks]
    repeated = next((name for position, name in enumerate(names) if name in names[:position]), None)
    if repeated is not None:
        raise UsageError(f"two benchmarks are both named '{repeated}'; rename one file so their counts stay apart")
    index: dict[tuple[str, ...], int] = {}
    for position, (_, texts) in enumerate(benchmarks):
        for text in texts:
            for gram in ngrams(text, n):
                # An n-gram shared by two benchmarks counts for the earlier one.
                index.setdefault(gram, position)
    found = []
    for text in prompts[PROBLEM].to_list():
        hits = [index[gram] for gram in ngrams(text, n) if gram in index]
        found.append(names[min(hits)] if hits else None)
    result = pl.DataFrame(
        {
            PROMPT_ID: prompts[PROMPT_ID].to_list(),
            "drop_reason": [CONTAMINATED if name is not None else None for name in found],
            "benchmark": found,
        },
        schema={PROMPT_ID: pl.String, "drop_reason": pl.String, "benchmark": pl.String},
    )
    log.info(
        "decontamination (%d-grams, %d benchmark n-grams): %d of %d prompts contaminated",
        n,
        len(index),
        result["benchmark"].is_not_null().sum(),
        result.height,
    )
    return result
