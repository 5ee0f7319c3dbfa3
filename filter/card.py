"""What filter says about its output: the funnel (stats.json), hints when most rows fail one check, and
the dataset card (README.md) with the YAML metadata `datasets` reads.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from r1distill import __version__
from r1distill.redact import redact_command, redact_settings
from r1distill.schema import DROP_GENERATION_ERROR, DROP_INVALID_PROBLEM, PASS_RATE, SFT_SCHEMA

if TYPE_CHECKING:
    from r1distill.filter.run import FilterConfig


def funnel_stats(scored: pl.DataFrame, prompt_drops: pl.DataFrame, kept: dict[str, int], cfg: FilterConfig) -> dict:
    # Rows that failed in generate are counted apart: they were never judged, so they are no verdict on the data.
    reasons = scored["drop_reason"].filter(scored["drop_reason"] != DROP_GENERATION_ERROR).value_counts(sort=True)
    prompts = scored.group_by("prompt_id").agg(pl.col(PASS_RATE).first(), pl.col("keep").any())
    histogram = Counter(min(int(rate * 10), 9) for rate in prompts[PASS_RATE].drop_nulls().to_list())
    contaminated = prompt_drops.filter(pl.col("drop_reason") == "contaminated")["benchmark"].value_counts(sort=True)
    verdicts = {
        check: dict(zip(*scored[f"{check}_verdict"].value_counts(sort=True).to_dict(as_series=False).values()))
        for check in cfg.checks
    }
    by_source = scored.filter("keep").group_by(pl.col("source").fill_null(Path(cfg.input).name)).len()
    return {
        "rows_in": scored.height,
        "generation_errors": int((scored["drop_reason"] == DROP_GENERATION_ERROR).sum()),
        "prompts_in": prompts.height,
        "dropped": dict(zip(reasons["drop_reason"].to_list(), reasons["count"].to_list())),
        "kept": kept,
        "prompts_kept": int(prompts["keep"].sum()),
        "verdicts": verdicts,
        "pass_rate_histogram": {f"{b / 10:.1f}-{(b + 1) / 10:.1f}": histogram.get(b, 0) for b in range(10)},
        "contaminated_by_benchmark": dict(zip(contaminated["benchmark"].to_list(), contaminated["count"].to_list())),
        "kept_by_source": dict(zip(by_source["source"].to_list(), by_source["len"].to_list())),
        "decided_by": _decided_by(scored) if "judge" in cfg.checks else {},
        "hints": _hints(scored, cfg),
    }


def _decided_by(scored: pl.DataFrame) -> dict[str, int]:
    """Rows of the judge check decided by the rules, by the judge, or by neither (judge_unparseable, judge_error)."""
    verdict = scored.filter(pl.col("drop_reason").ne_missing(DROP_GENERATION_ERROR))["judge_verdict"]
    judged = verdict.is_in(["judge_correct", "judge_incorrect"])
    undecided = verdict.is_in(["judge_unparseable", "judge_error"])
    return {"rule": int((~judged & ~undecided).sum()), "judge": int(judged.sum()), "neither": int(undecided.sum())}


# The verdicts that pass a check; every other one (a failure, or "cannot verify": timeout, no_gold...) does not.
PASSING = frozenset({"correct", "judge_correct", "ok", "consistent", "complete", "passed"})

# What to change when most rows fail one check the same way: (check, verdict) -> advice.
_HINTS = {
    ("format", "missing_think"): "the teacher never opened a <think> block (chat models without reasoning do not): drop the "
    "format check (e.g. --check accuracy --check language) or ask for thinking in generate's --system / --prompt-template",
    ("format", "unclosed_think"): "the thinking never closed: the traces hit generate's --max-tokens; rerun generate with a larger "
    "--max-tokens (only the truncated rows are redone)",
    ("truncated", "truncated"): "the traces were cut off at generate's --max-tokens; rerun generate with a larger --max-tokens "
    "(only the truncated rows are redone)",
    ("accuracy", "no_gold"): "the traces have no gold answer: give generate an input with an answer column (--answer-column), "
    "or drop the accuracy check",
    ("accuracy", "no_answer"): "the responses state no final answer: ask for \\boxed{} in generate's prompt, or check with "
    "--accuracy exact / choice",
    ("accuracy", "incorrect"): "most answers are wrong: use a stronger teacher or more samples (-n), and check that --accuracy "
    "fits the data",
    ("accuracy", "gold_unparseable"): "Math-Verify cannot read the gold answers: check --accuracy (choice / exact) or the answer column",
    ("judge", "judge_unparseable"): "the judge's replies do not end with a VERDICT line: use a stronger --judge-model or a "
    "larger --judge-max-tokens",
    ("language", "mixed"): "the reasoning is not mostly in --language: set the teacher's language, or lower --min-language-share",
    ("repetition", "repetitive"): "the traces repeat themselves: raise --max-repetition, or sample at a higher temperature",
    ("length", "too_long"): "the traces are longer than --max-tokens of filter: raise it",
    ("length", "too_short"): "the traces are shorter than --min-tokens: lower it",
}


def _hints(scored: pl.DataFrame, cfg: FilterConfig) -> list[str]:
    """A line per check that most judged rows failed, naming the usual cause and the option to change."""
    judged = scored.filter(pl.col("drop_reason").is_in([DROP_GENERATION_ERROR, DROP_INVALID_PROBLEM]).fill_null(False).not_())
    hints = []
    for check in cfg.checks:
        # Every row that fails this check, not only those it failed first: a teacher that never writes
        # <think> must be named even when its answers are also wrong.
        failing = judged.filter(~pl.col(f"{check}_verdict").is_in(list(PASSING)))
        if judged.height == 0 or failing.height * 2 < judged.height:
            continue
        verdict = failing[f"{check}_verdict"].mode().sort()[0]
        # The judge check is the accuracy check where the rules decide, and has its hints.
        advice = _HINTS.get((check, verdict)) or _HINTS.get(("accuracy" if check == "judge" else check, verdict), f"check the {check} options")
        hints.append(f"{failing.height} of {judged.height} rows fail the {check} check ({verdict}): {advice}")
    return hints


def dataset_card(cfg: FilterConfig, stats: dict, started: datetime) -> str:
    """README.md of the output: YAML metadata that `datasets` reads, the funnel, the command, versions."""
    from importlib.metadata import version

    total = stats["kept"]["reasoning"] + stats["kept"]["non_reasoning"]
    size = "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M" if total < 1_000_000 else "n>1M"
    funnel = [f"| rows in | {stats['rows_in']:,} |", f"| failed in generate (not judged) | {stats['generation_errors']:,} |"]
    funnel += [f"| dropped: {reason} | {count:,} |" for reason, count in stats["dropped"].items()]
    if stats["decided_by"]:
        decided = stats["decided_by"]
        funnel += [f"| judge check decided by the rules / the judge / neither | {decided['rule']:,} / {decided['judge']:,} / {decided['neither']:,} |"]
    funnel += [f"| kept (reasoning) | {stats['kept']['reasoning']:,} |", f"| added (non-reasoning) | {stats['kept']['non_reasoning']:,} |"]
    settings = redact_settings({k: v for k, v in asdict(cfg).items() if k != "command"})
    versions = {name: version(name) for name in ("polars", "pyarrow", "math-verify")}
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: scored
  data_files:
  - split: train
    path: scored/*.parquet
dataset_info:
  config_name: default
  features:
{_yaml_features(SFT_SCHEMA)}
tags:
- reasoning
- distillation
- r1distill
size_categories:
- {size}
---

# Reasoning SFT data

Made by `r1distill filter` {__version__} from `{Path(cfg.input).name}` on {started:%Y-%m-%d}: traces that passed
{", ".join(cfg.checks)} ({cfg.accuracy} accuracy), rejection sampling `--keep {cfg.keep}`, dedup `{cfg.dedup}`
{"and decontamination against " + ", ".join(Path(b).name for b in cfg.decontaminate) if cfg.decontaminate else "(no decontamination)"}.

Each row is a chat in `messages`; the assistant turn of a reasoning row is
`<think>\\n{{reasoning}}\\n</think>\\n\\n{{response}}`. `kind` says reasoning or non_reasoning.
The `scored` config holds every input row with each check's score and verdict, its prompt's pass
rate, `keep` and the first `drop_reason`.

## Funnel

| step | rows |
|---|---:|
{chr(10).join(funnel)}

Pass-rate histogram (prompts): {json.dumps(stats["pass_rate_histogram"])}

## Reproduce

```
{" ".join(redact_command(cfg.command)) if cfg.command else "r1distill filter ..."}
```

Settings: `{json.dumps(settings)}`

Versions: r1distill {__version__}, Python {platform.python_version()}, {", ".join(f"{k} {v}" for k, v in versions.items())}.
"""


def _yaml_features(schema: pa.Schema) -> str:
    """The `features` of a dataset card for the SFT schema, so readers know the columns even of an empty split."""
    lines = []
    for field_ in schema:
        if pa.types.is_list(field_.type):
            lines.append(f"  - name: {field_.name}\n    list:")
            lines += [f"    - name: {sub.name}\n      dtype: {sub.type}" for sub in field_.type.value_type]
        else:
            lines.append(f"  - name: {field_.name}\n    dtype: {'float64' if field_.type == pa.float64() else field_.type}")
    return "\n".join(lines)
