"""Scoring samples with the shared accuracy reward, and turning scored samples into results.

Every sample gets the verdict of `rewards.rule("accuracy")` (the check filter selected with and rl
optimises), the answer it states (`rewards.stated_answer`), its vote class for maj@k (metrics.py) and
the verdict of `rewards.rule("format")`, so a model's share of completions in R1's layout is measured
with the check filter keeps traces by and rl rewards.
Samples that failed in generate are not judged: their verdict is `generation_error`, and they are
counted apart (those the server refused for good too: `generation_refused`) and left out of every
rate; so are the problems whose gold cannot be verified.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from r1distill import rewards
from r1distill.backends import failure_reason, is_permanent
from r1distill.eval.metrics import stderr, summarize, vote_classes
from r1distill.rewards import stated_answer
from r1distill.rewards.judge import JudgedAccuracy
from r1distill.schema import FINISH_ERROR, PROBLEM, PROMPT_ID, split_reasoning

GENERATION_ERROR = "generation_error"
# A program that passes every test is a correct sample in every metric, as is a judge's yes.
_JUDGED = {"judge_correct": "correct", "judge_incorrect": "incorrect", "passed": "correct"}
UNVERIFIABLE = ("no_gold", "gold_unparseable", "no_tests")


def token_counter(tokenizer) -> Callable[[list[str]], list[int | None]]:
    """Counts the tokens of texts with `tokenizer`; with none, every count is None (unknown)."""

    def count(texts: list[str]) -> list[int | None]:
        if tokenizer is None:
            return [None] * len(texts)
        counts = []
        for start in range(0, len(texts), 256):
            counts += [len(ids) for ids in tokenizer(texts[start : start + 256], add_special_tokens=False)["input_ids"]]
        return counts

    return count


def part_tokens(completions: list[str], count_tokens) -> tuple[list[int | None], list[int | None]]:
    """Thinking and response tokens of each completion (0 thinking tokens when it has no think block)."""
    parts = [split_reasoning(completion) for completion in completions]
    thinking = count_tokens([reasoning or "" for reasoning, _ in parts])
    return [0 if reasoning is None and t is not None else t for (reasoning, _), t in zip(parts, thinking)], count_tokens([r for _, r in parts])


def score(rows: pl.DataFrame, accuracy, mode: str, format_layout: str = "r1") -> pl.DataFrame:
    """`rows` with `verdict`, `score`, `stated_answer`, `vote` (maj@k class) and `format_verdict` (R1's
    layout, or R1-Zero's with `format_layout="r1-zero"`) columns added; with the
    judge (`JudgedAccuracy`) also `rule_verdict` and `judge_verdict` (null where it was not asked), and
    a judge's correct or incorrect is the row's verdict.

    Votes are classes within one (model, budget, prompt_id), in sample order.
    """
    completions, finishes = rows["completion"].to_list(), rows["finish_reason"].to_list()
    failed = [finish == FINISH_ERROR for finish in finishes]
    rule = accuracy.accuracy if isinstance(accuracy, JudgedAccuracy) else accuracy
    columns = {"answer": rows["answer"].to_list(), "finish_reason": finishes}
    columns |= {name: rows[name].to_list() for name in rule.columns if name in rows.columns and name not in columns}
    if isinstance(accuracy, JudgedAccuracy):
        decided = accuracy.decide(completions, problem=rows[PROBLEM].to_list(), **columns)
        judged = [d.final for d in decided]
        rows = rows.with_columns(
            pl.Series("rule_verdict", [None if bad else d.rule.verdict for d, bad in zip(decided, failed)], pl.String),
            pl.Series("judge_verdict", [None if bad or d.judge is None else d.judge.verdict for d, bad in zip(decided, failed)], pl.String),
        )
        accuracy = rule  # votes compare stated answers with the rules alone
    else:
        judged = accuracy.judge(completions, **columns)
    verdicts = [GENERATION_ERROR if bad else _JUDGED.get(j.verdict, j.verdict) for j, bad in zip(judged, failed)]
    scores = [None if bad else j.score for j, bad in zip(judged, failed)]
    stated = [None if bad else stated_answer(c, f, mode) for c, f, bad in zip(completions, finishes, failed)]
    formats = [None if bad else j.verdict for j, bad in zip(rewards.rule("format", layout=format_layout).judge(completions), failed)]
    rows = rows.with_columns(
        pl.Series("verdict", verdicts, pl.String), pl.Series("score", scores, pl.Float64), pl.Series("stated_answer", stated, pl.String),
        pl.Series("format_verdict", formats, pl.String),
        pl.int_range(pl.len()).alias("_row"),
    )
    voting = rows.filter(~pl.col("verdict").is_in([GENERATION_ERROR, *UNVERIFIABLE])).sort("model", "budget", PROMPT_ID, "sample", nulls_last=True)
    groups = voting.group_by("model", "budget", PROMPT_ID, maintain_order=True).agg("_row", "stated_answer", "verdict")
    problems = [list(zip(answers, [v == "correct" for v in verdicts])) for answers, verdicts in zip(groups["stated_answer"], groups["verdict"])]
    votes = [None] * rows.height
    for indices, classes in zip(groups["_row"].to_list(), vote_classes(problems, _same(accuracy, mode))):
        for index, vote in zip(indices, classes):
            votes[index] = vote
    return rows.with_columns(pl.Series("vote", votes, pl.Int64)).drop("_row")


def _same(accuracy, mode: str) -> Callable[[list[tuple[str, str]]], list[bool]]:
    """Whether pairs of stated answers are equivalent: Math-Verify in the accuracy reward's workers (math)."""

    def same(pairs: list[tuple[str, str]]) -> list[bool]:
        if mode != "math":
            return [False] * len(pairs)  # letters and exact strings are the same only when equal, which votes already know
        judged = accuracy.judge([f"\\boxed{{{second}}}" for _, second in pairs], answer=[first for first, _ in pairs])
        return [judgement.verdict == "correct" for judgement in judged]

    return same


def metrics(rows: pl.DataFrame) -> dict:
    """Every metric of scored rows (one model, one budget); see metrics.summarize."""
    unverifiable = rows.filter(pl.col("verdict").is_in(UNVERIFIABLE))[PROMPT_ID].unique()
    usable = rows.filter((pl.col("verdict") != GENERATION_ERROR) & ~pl.col(PROMPT_ID).is_in(unverifiable.implode())).sort(PROMPT_ID, "sample")
    grouped = usable.group_by(PROMPT_ID, maintain_order=True).agg(
        pl.col("verdict").alias("verdicts"), pl.col("vote").alias("votes"), pl.col("finish_reason").alias("finish"),
        pl.col("thinking_tokens").alias("thinking"), pl.col("response_tokens").alias("response"), pl.col("completion_tokens").alias("tokens"),
    )
    result = summarize(grouped.drop(PROMPT_ID).to_dicts())
    if "format_verdict" in usable.columns:
        # Over problems like pass@1, so base and trained compare on the same footing.
        rates = usable.group_by(PROMPT_ID).agg((pl.col("format_verdict") == "ok").mean().alias("rate"))["rate"].to_list()
        result["format_pass"] = sum(rates) / len(rates) if rates else None
        result["format_pass_stderr"] = stderr(rates)
    result["mean_thinking_tokens_stderr"] = stderr(usable["thinking_tokens"].drop_nulls().to_list())
    errors = rows.filter(pl.col("verdict") == GENERATION_ERROR)
    result["generation_errors"] = errors.height
    # Completions scored from a table of another tool's may have no error column: none refused then.
    refused = errors["error"].to_list() if "error" in errors.columns else []
    result["generation_refused"] = sum(is_permanent(failure_reason(error)) for error in refused)
    result["unverifiable_problems"] = unverifiable.len()
    if "judge_verdict" in usable.columns:
        result["judge"] = judge_metrics(usable)
    return result


DISAGREEMENTS_SHOWN = 50


def judge_metrics(usable: pl.DataFrame) -> dict:
    """Shares of samples correct by the rules, with the judge (its verdict where asked, else the rule's), by
    both and by either; the rows decided by each; and the samples where both decided and disagree."""
    rule = pl.col("rule_verdict") == "correct"
    judge = pl.col("verdict") == "correct"
    decided = pl.col("rule_verdict").is_in(["correct", "incorrect"]) & pl.col("judge_verdict").is_in(["judge_correct", "judge_incorrect"])
    shares = usable.select(rule.mean().alias("rule_correct"), judge.mean().alias("judge_correct"), (rule & judge).mean().alias("both_correct"),
                           (rule | judge).mean().alias("any_correct")).to_dicts()[0] if usable.height else {}
    disagree = usable.filter(decided & (rule != judge))
    return {
        **shares,
        "rule_decided": int(usable["judge_verdict"].is_null().sum()),
        "judge_decided": int(usable["judge_verdict"].is_in(["judge_correct", "judge_incorrect"]).sum()),
        "neither_decided": int(usable["judge_verdict"].is_in(["judge_unparseable", "judge_error"]).sum()),
        "disagreements": disagree.height,
        "disagreeing_samples": disagree.head(DISAGREEMENTS_SHOWN).select(
            PROMPT_ID, "sample", "answer", "stated_answer", pl.col("rule_verdict").alias("rule"), pl.col("judge_verdict").alias("judge")
        ).to_dicts(),
    }


def cut_curve(rows: pl.DataFrame, budgets: list[int]) -> list[dict]:
    """pass@1 of uncapped samples rescored as if generation had stopped at each budget: a sample longer
    than it is cut there and has no answer. Shows what a smaller --max-tokens would have cost."""
    usable = rows.filter(~pl.col("verdict").is_in([GENERATION_ERROR, *UNVERIFIABLE]))
    if usable.height == 0 or usable["completion_tokens"].null_count():
        return []  # token counts unknown (a table without them): nothing to cut by
    curve = []
    for budget in budgets:
        within = pl.col("completion_tokens") <= budget
        rates = usable.group_by(PROMPT_ID).agg(((pl.col("verdict") == "correct") & within).mean().alias("rate"))["rate"].to_list()
        curve.append({"max_tokens": budget, "pass@1": sum(rates) / len(rates), "pass@1_stderr": stderr(rates), "cut": 1 - usable.select(within.mean()).item()})
    return curve


def model_results(rows: pl.DataFrame, group_by: list[str], budgets: list[int]) -> dict:
    """Metrics of one model's scored rows: overall, per group value, and the test-time scaling curves."""
    natural = rows.filter(pl.col("budget").is_null())
    result = {"metrics": metrics(natural), "groups": {}}
    for column in group_by:
        values = natural[column].cast(pl.String).unique().sort(nulls_last=True).to_list()
        result["groups"][column] = {str(value): metrics(natural.filter(pl.col(column).cast(pl.String).eq_missing(value))) for value in values}
    if budgets:
        forced = []
        for budget in sorted(rows["budget"].drop_nulls().unique().to_list()):
            part = rows.filter(pl.col("budget") == budget)
            found = metrics(part)
            usable = part.filter(pl.col("verdict") != GENERATION_ERROR)
            forced.append({"budget": budget, **{k: found[k] for k in _CURVE}, "forced": usable["forced"].mean() if usable.height else None})
        result["thinking_budget"] = {
            "natural": {k: result["metrics"][k] for k in _CURVE},
            "forced": forced,
            "cut": cut_curve(natural, budgets),
        }
    return result


_CURVE = ("pass@1", "pass@1_stderr", "mean_thinking_tokens", "mean_thinking_tokens_stderr", "format_pass", "samples")
