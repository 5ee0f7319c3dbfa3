"""Test-time scaling by budget forcing (s1, Muennighoff et al. 2025): accuracy against thinking tokens.

Each budget B is one `generate --thinking-budget B` run (generate/budget.py: the thinking cut at B
tokens, "</think>" and FORCED_CUE forced, then at most --answer-tokens of answer) into
OUT/generations/<model>/budget-B, through the public `generate` function: its backends and crash-safe
store as they are, so a killed eval resumes (between the two requests, too) and a larger -n adds only
the new samples.

A sample's thinking tokens are the thinking step's completion tokens when the thinking was cut (exact),
else the thinking's own token count.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from r1distill.eval.benchmarks import read_traces
from r1distill.generate import generate
from r1distill.generate.run import SharedBackend
from r1distill.generate.budget import thinking_tokens
from r1distill.generate.failures import FailedRows
from r1distill.schema import PROMPT_ID, THINK_CLOSE, THINK_OPEN

SAMPLE_COLUMNS = ("id", PROMPT_ID, "sample", "model", "backend", "error", "completion", "finish_reason", "completion_tokens", "forced")


def budget_rows(cfg, model: str, prompts_path: Path, prompts: pl.DataFrame, budget: int, folder: Path, count_tokens,
                shared: SharedBackend | None = None) -> tuple[pl.DataFrame, FailedRows]:
    """The samples of one budget (one row per (prompt, sample), completion canonical) and the requests that failed.

    `count_tokens(texts)` counts tokens with the model's tokenizer; `shared`: the model's backend, see SharedBackend.
    """
    out = folder / f"budget-{budget}"
    summary = generate(cfg.generate_config(model, str(prompts_path), str(out), max_tokens=cfg.answer_tokens, thinking_budget=budget), shared)
    rows = read_traces(out, prompts[PROMPT_ID], cfg.num_samples).select(SAMPLE_COLUMNS)
    exact = thinking_tokens(out)
    thinking = [exact.get(key) if forced else None for key, forced in zip(rows["id"].to_list(), rows["forced"].to_list())]
    unknown = [i for i, value in enumerate(thinking) if value is None]
    completions = rows["completion"].to_list()
    for i, value in zip(unknown, count_tokens([completions[i].partition(THINK_CLOSE)[0].removeprefix(THINK_OPEN) for i in unknown])):
        thinking[i] = value
    return rows.with_columns(
        pl.col("completion_tokens").cast(pl.Int64),
        pl.Series("thinking_tokens", thinking, pl.Int64),
        pl.lit(budget, pl.Int64).alias("budget"),
    ), summary.failures
