"""r1distill filter: rule rewards and rejection sampling turn raw traces into an SFT-ready dataset.

DeepSeek-R1's recipe keeps only traces whose final answer is right (accuracy), well formed (format)
and in one language (language consistency), then mixes ~600k such reasoning samples with ~200k
non-reasoning samples that carry no thinking. This stage does that over a trace table:

1. Check every option and the input's columns up front (one `UsageError`, nothing written).
2. Pass 1, streaming Arrow batches: judge every row with every enabled check (the same reward code
   `r1distill rl` optimises), keeping only ids, scores and verdicts in memory, plus one problem text
   per prompt. Math accuracy runs in killable worker processes (verify.py): no row can hang the run.
3. Per prompt: exact or near-duplicate problems and problems that overlap a benchmark are dropped;
   the pass rate (correct / samples) is recorded and can bound the prompts kept (too easy, too hard).
4. Rejection sampling: among a prompt's samples that pass every check, keep all, the first K or the
   shortest K.
5. Pass 2, streaming again: write the kept rows as chat `messages` whose assistant turn is
   `<think>\\n{reasoning}\\n</think>\\n\\n{response}`, add non-reasoning conversations at the asked
   ratio, and lay OUT out as a Hugging Face dataset repository: data/train-*.parquet, the scored
   table of every input row (scored/), stats.json with the funnel, and a README.md dataset card.

Every dropped row carries the first reason it was dropped for, and the funnel counts rows per reason.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from r1distill.console import RowProgress, summary_table
from r1distill.data import NUMBER, PROMPT, TEXT, VALUE, check_columns, read_table
from r1distill.errors import StageError, UsageError, first_line
from r1distill import files, rewards
from r1distill.cluster import ClusterSettings
from r1distill.filter.card import PASSING, dataset_card, funnel_stats
from r1distill.filter.dedup import dedup
from r1distill.filter.decontaminate import decontaminate, load_benchmark
from r1distill.filter.write import follow_umask, load_non_reasoning, write_sft
from r1distill.rewards.judge import CACHE_FILE, Judge, JudgedAccuracy, JudgeSettings
from r1distill.schema import (
    DROP_GENERATION_ERROR,
    DROP_INVALID_PROBLEM,
    FINISH_ERROR,
    PASS_RATE,
    PROBLEM,
    stable_id,
)

log = logging.getLogger(__name__)

CHECKS = (*rewards.RULES, "judge")
KEEP_POLICIES = ("all", "first", "shortest")
NO_THINK_STYLES = ("none", "empty")
DEDUP_MODES = ("none", "exact", "near")
INPUT_KINDS = {
    "id": VALUE, "prompt_id": VALUE, "sample": NUMBER, "problem": TEXT, "answer": VALUE, "prompt": PROMPT, "completion": TEXT,
    "reasoning": TEXT, "response": TEXT, "finish_reason": TEXT, "completion_tokens": NUMBER, "source": TEXT,
}
"""The input columns filter reads, and what each may hold (`data.check_columns`)."""
INPUT_COLUMNS = tuple(INPUT_KINDS)

@dataclass
class FilterConfig(rewards.CodeSettings, JudgeSettings, ClusterSettings):
    """Settings of one `r1distill filter` run (with the code check's `CodeSettings`, the judge's `JudgeSettings`
    and where the scoring runs, `ClusterSettings`)."""

    input: str
    """Trace table: a `r1distill generate` output folder, or any dataset with problem and completion columns."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """New output folder, laid out as a Hugging Face dataset repository (data/, scored/, stats.json, README.md)."""
    checks: list[str] = field(default_factory=lambda: ["accuracy", "format", "language", "truncated", "repetition"], metadata={"flags": ("--check",)})
    """A check every kept row must pass; repeat it."""
    accuracy: str = "math"
    """Answer check: math (Math-Verify against the gold answer), choice (multiple-choice letters) or exact (string)."""
    accuracy_column: str | None = None
    """Column naming the answer check per row (math, choice or exact), overriding --accuracy."""
    lenient_format: bool = False
    """Accept completions with no opening <think> but a closing one (tables from tools that drop a pre-filled tag)."""
    language: str = "en"
    """Target language of the reasoning (language check)."""
    min_language_share: float = 0.95
    """Least share of the reasoning's words in the target language."""
    min_tokens: int | None = None
    """Fewest completion tokens a kept row may have (length check)."""
    max_tokens: int | None = None
    """Most completion tokens a kept row may have (length check)."""
    max_repetition: float = 0.5
    """Largest 4-gram repetition ratio a kept row may have (repetition check)."""
    keep: str = "all"
    """Rejection sampling among a prompt's passing samples: all, first:K or shortest:K."""
    min_pass_rate: float = 0.0
    """Drop prompts whose pass rate (correct / samples) is lower: too hard."""
    max_pass_rate: float = 1.0
    """Drop prompts whose pass rate is higher: too easy (RL prompt sets use e.g. 0.8)."""
    dedup: str = "exact"
    """Problem dedup: none, exact (normalised text) or near (MinHash LSH)."""
    dedup_threshold: float = 0.8
    """Jaccard similarity above which problems are near duplicates."""
    decontaminate: list[str] = field(default_factory=list)
    """Benchmark file or Hub dataset whose problems must not leak into the training set; repeat it."""
    ngram: int = 8
    """Word n-gram length of the decontamination overlap."""
    non_reasoning: str | None = None
    """Conversations without thinking to mix in (messages, or problem/prompt + response columns)."""
    non_reasoning_ratio: float | None = None
    """Non-reasoning rows per kept reasoning row (R1 used about 200k / 600k = 0.33)."""
    non_reasoning_count: int | None = None
    """Non-reasoning rows to add, instead of a ratio."""
    no_think: str = "none"
    """Render non-reasoning answers with no think block (none) or an empty one (empty)."""
    timeout: float = 5.0
    """Seconds Math-Verify may spend on one answer; then the row's verdict is 'timeout'."""
    workers: int | None = None
    """Math-Verify worker processes [default: the usable cores]."""
    batch_rows: int = 20_000
    """Rows per streaming batch (bounds memory)."""
    skip_invalid: bool = False
    """Drop rows whose problem is null or empty (counted as invalid_problem) instead of refusing the input."""
    seed: int = 0
    """Seed of the non-reasoning sample."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the card."""

    def rule(self, check: str) -> rewards.Rule | rewards.Accuracy | JudgedAccuracy:
        """The reward behind `check`, with this run's options bound."""
        if check == "judge":  # the accuracy rule, and the judge for what it cannot decide (verdicts cached in OUT)
            return JudgedAccuracy(self.rule("accuracy"), Judge(self, Path(self.output) / CACHE_FILE))
        options = {
            "accuracy": {"mode": self.accuracy, "mode_column": self.accuracy_column, "timeout": self.timeout, "workers": self.workers},
            "format": {"lenient": self.lenient_format},
            "language": {"language": self.language, "min_share": self.min_language_share},
            "length": {"min_tokens": self.min_tokens, "max_tokens": self.max_tokens},
            "repetition": {"max_ratio": self.max_repetition},
            "code": self.code_options(self.workers),
        }
        return rewards.rule(check, **options.get(check, {}))

    def keep_policy(self) -> tuple[str, int | None]:
        policy, _, count = self.keep.partition(":")
        return policy, int(count) if count else None

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings."""
        problems = self.code_problems()
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            problems.append(f"--check {unknown[0]!r} is unknown; use {', '.join(CHECKS)}")
        if placed := files.output_problem(self.output):
            problems.append(placed)
        if "judge" in self.checks and "accuracy" in self.checks:
            problems.append("--check judge is the accuracy check with a judge for what rules cannot decide: drop --check accuracy")
        problems += self.judge_problems("judge" in self.checks)
        problems += self.cluster_problems()
        if self.executor == "ray" and "judge" in self.checks:
            # The judge's verdict cache is a file in OUT that every scorer would write at once.
            problems.append("--check judge scores with --executor local (its verdict cache lives in OUT)")
        if self.accuracy not in rewards.ACCURACY_MODES:
            problems.append(f"--accuracy must be one of {', '.join(rewards.ACCURACY_MODES)}, got {self.accuracy!r}")
        try:
            policy, count = self.keep_policy()
            if policy not in KEEP_POLICIES or (policy == "all") != (count is None) or (count is not None and count < 1):
                raise ValueError
        except ValueError:
            problems.append(f"--keep must be all, first:K or shortest:K with K >= 1, got {self.keep!r}")
        if not 0 <= self.min_pass_rate <= self.max_pass_rate <= 1:
            problems.append("--min-pass-rate and --max-pass-rate must satisfy 0 <= min <= max <= 1")
        if self.dedup not in DEDUP_MODES:
            problems.append(f"--dedup must be none, exact or near, got {self.dedup!r}")
        if not 0 < self.dedup_threshold <= 1:
            problems.append("--dedup-threshold must be in (0, 1]")
        if not 0 <= self.min_language_share <= 1:
            problems.append("--min-language-share must be in [0, 1]")
        if not 0 <= self.max_repetition <= 1:
            problems.append("--max-repetition must be in [0, 1]")
        if self.language not in rewards.LANGUAGE_SCRIPTS:
            problems.append(f"--language {self.language!r} is not supported; use one of {', '.join(rewards.LANGUAGE_SCRIPTS)}")
        if self.workers is not None and self.workers < 1:
            problems.append(f"--workers must be at least 1, got {self.workers}")
        if any(t is not None and t < 0 for t in (self.min_tokens, self.max_tokens)):
            problems.append("--min-tokens and --max-tokens must be >= 0")
        elif self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            problems.append(f"--min-tokens ({self.min_tokens}) is larger than --max-tokens ({self.max_tokens}): every row would be dropped")
        if self.no_think not in NO_THINK_STYLES:
            problems.append(f"--no-think must be none or empty, got {self.no_think!r}")
        if self.non_reasoning is None and (self.non_reasoning_ratio is not None or self.non_reasoning_count is not None):
            problems.append("--non-reasoning-ratio/--non-reasoning-count need --non-reasoning FILE")
        if self.non_reasoning_ratio is not None and self.non_reasoning_count is not None:
            problems.append("give --non-reasoning-ratio or --non-reasoning-count, not both")
        if (self.non_reasoning_ratio or 0) < 0 or (self.non_reasoning_count or 0) < 0:
            problems.append("--non-reasoning-ratio and --non-reasoning-count must be >= 0")
        if self.timeout <= 0 or self.ngram < 1 or self.batch_rows < 1:
            problems.append("--timeout, --ngram and --batch-rows must be positive")
        # A folder holding only the judge's cache is an earlier run's that did not finish: its verdicts are reused.
        if Path(self.output).exists() and (not Path(self.output).is_dir() or any(p.name != CACHE_FILE for p in Path(self.output).iterdir())):
            problems.append(f"-o {self.output}: exists and is not empty; choose a new folder")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class FilterSummary:
    """The funnel of one run."""

    output: str
    rows_in: int
    generation_errors: int
    """Rows that failed in generate (finish_reason error): not judged, not counted in pass rates."""
    kept: int
    non_reasoning: int
    dropped: dict[str, int]
    """Rows dropped per reason (the first reason that applied)."""


def filter_traces(cfg: FilterConfig) -> FilterSummary:
    """Run the filter stage (see the module docstring); the CLI and the Python API both call this."""
    started = datetime.now(timezone.utc)
    cfg.check()
    source = _open(cfg.input, ((cfg.accuracy_column,) if cfg.accuracy_column else ()) + ((cfg.tests_column,) if "code" in cfg.checks else ()))
    invalid = source.invalid_problems()
    if invalid and not cfg.skip_invalid:
        raise UsageError(
            f"{cfg.input}: column 'problem' is null or blank at row {invalid[0]} ({len(invalid)} such rows); "
            "fix the input, or pass --skip-invalid to drop them"
        )
    if "truncated" in cfg.checks and "finish_reason" not in source.columns:
        # Without finish reasons every row would be "unknown" and dropped: skip the check instead.
        log.warning("%s has no finish_reason column: the truncated check is skipped", cfg.input)
        cfg = replace(cfg, checks=[c for c in cfg.checks if c != "truncated"])
    benchmarks = [load_benchmark(b) for b in cfg.decontaminate]
    extra = load_non_reasoning(cfg.non_reasoning) if cfg.non_reasoning else None
    scored, problems = _score(source, cfg)
    prompt_drops = _prompt_drops(problems, cfg, benchmarks)
    scored = _select(scored, prompt_drops, cfg)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside OUT and renamed into place: a crash never leaves half a dataset behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        kept = write_sft(_rows(source, cfg), source.name, scored, staging, cfg, extra)
        scored_dir = staging / "scored"
        scored_dir.mkdir()
        scored.write_parquet(scored_dir / "scored-00000.parquet")
        stats = funnel_stats(scored, prompt_drops, kept, cfg)
        (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (staging / "README.md").write_text(dataset_card(cfg, stats, started))
        if (out / CACHE_FILE).exists():
            (out / CACHE_FILE).rename(staging / CACHE_FILE)
        if out.exists():
            out.rmdir()
        follow_umask(staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for hint in stats["hints"]:
        log.warning(hint)
    if not stats["kept"]["reasoning"]:
        log.warning("no trace was kept: %s holds an empty training split (see the funnel and the hints above)", out)
    return FilterSummary(
        str(out), stats["rows_in"], stats["generation_errors"], stats["kept"]["reasoning"], stats["kept"]["non_reasoning"], stats["dropped"]
    )


class _Source:
    """A trace table read in Arrow batches, so inputs larger than memory stream through."""

    def __init__(self, name: str, files: list[Path], table: pa.Table | None) -> None:
        self.name = name
        self.files = files
        self.table = table
        self.schema = pq.read_schema(files[0]) if files else table.schema
        self.columns = [c for c in INPUT_COLUMNS if c in self.schema.names]

    def batches(self, rows: int) -> Iterator[pa.RecordBatch]:
        if self.table is not None:
            yield from self.table.select(self.columns).to_batches(max_chunksize=rows)
            return
        # File by file, row group by row group, no read-ahead: memory stays at about one batch
        # however large the input (pyarrow.dataset's scanner reads ahead by hundreds of MB).
        for path in self.files:
            yield from pq.ParquetFile(path).iter_batches(batch_size=rows, columns=self.columns)

    def invalid_problems(self) -> list[int]:
        """Row numbers whose problem is null or blank, from one read of the problem column alone."""
        found, offset = [], 0
        for batch in self._column_batches(PROBLEM):
            column = batch.column(0)
            bad = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)
            found += [offset + int(i) for i in pc.indices_nonzero(bad).to_pylist()]
            offset += batch.num_rows
        return found

    def _column_batches(self, name: str) -> Iterator[pa.RecordBatch]:
        if self.table is not None:
            yield from self.table.select([name]).to_batches()
            return
        for path in self.files:
            yield from pq.ParquetFile(path).iter_batches(columns=[name])

    def count(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files) if self.table is None else self.table.num_rows


def _open(source: str, extra_columns: tuple[str, ...] = ()) -> _Source:
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.parquet")) or sorted(path.glob("data/*.parquet"))
    else:
        files = [path] if path.suffix == ".parquet" and path.exists() else []
    if files:
        try:
            opened = _Source(source, files, None)
            for other in files[1:]:
                missing = [c for c in opened.columns if c not in pq.read_schema(other).names]
                if missing:
                    raise UsageError(f"{other}: has no column '{missing[0]}' while {files[0].name} has; all shards need the same columns")
        except UsageError:
            raise
        except Exception as err:
            raise UsageError(f"{source}: cannot read its Parquet files: {first_line(err)}") from err
    else:
        frame = read_table(source, text_column="completion")
        opened = _Source(source, [], frame.to_arrow())
    missing = [c for c in ("problem", "completion", *extra_columns) if c not in opened.schema.names]
    if missing:
        raise UsageError(f"{source}: no column '{missing[0]}' (columns: {', '.join(opened.schema.names)}); is it a `r1distill generate` output?")
    opened.columns += [c for c in extra_columns if c not in opened.columns]
    if opened.count() == 0:
        raise UsageError(f"{source}: the table is empty")
    kinds = INPUT_KINDS | {name: TEXT for name in extra_columns}
    read = pa.schema([opened.schema.field(name) for name in kinds if name in opened.schema.names])
    check_columns(pl.from_arrow(read.empty_table()).schema, kinds, source)
    return opened


def _score(source: _Source, cfg: FilterConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pass 1: every row's scores and verdicts, and the first problem text of every prompt."""
    frames, problems = [], []
    # On Ray every actor holds rules of its own (filter/on_ray.py); here, none.
    rules = {check: cfg.rule(check) for check in cfg.checks} if cfg.executor == "local" else {}
    # The accuracy rule's Math-Verify workers start on the first math row and stop with this block.
    with ExitStack() as stack, RowProgress("filter: scoring", total=source.count(), generation=False) as progress:
        for reward in rules.values():
            stack.enter_context(reward)
        if cfg.executor == "ray":
            from r1distill.filter.on_ray import judge_on_ray

            judged = judge_on_ray(_rows(source, cfg), cfg)
        else:
            judged = ((rows, _judge(rows, rules, cfg)) for rows in _rows(source, cfg))
        for rows, verdicts in judged:
            frames.append(verdicts)
            valid = rows.filter(pl.col(PROBLEM).str.strip_chars() != "")  # null and blank problems never reach dedup
            problems.append(valid.select("prompt_id", PROBLEM).unique("prompt_id", keep="first", maintain_order=True))
            progress.advance(rows=rows.height)
    for reward in rules.values():
        if isinstance(reward, JudgedAccuracy) and (problem := reward.failure_problem()):
            raise StageError(f"{problem} in {cfg.output}/{CACHE_FILE}")
    scored = pl.concat(frames)
    repeated = scored["id"].is_duplicated()
    if repeated.any():
        raise UsageError(f"{source.name}: column 'id' has duplicate id '{scored['id'][int(repeated.arg_max())]}'; each trace needs a unique id")
    return scored, pl.concat(problems).unique("prompt_id", keep="first", maintain_order=True)


def _rows(source: _Source, cfg: FilterConfig) -> Iterator[pl.DataFrame]:
    """The input batch by batch with the trace columns filled in: the same rows, ids and order on every pass."""
    offset = 0
    for batch in source.batches(cfg.batch_rows):
        rows = _normalize(pl.from_arrow(batch), offset)
        offset += rows.height
        yield rows


def _normalize(rows: pl.DataFrame, offset: int) -> pl.DataFrame:
    """Fill the trace columns a foreign table may lack, from the ones it has."""
    height = rows.height
    if "prompt_id" not in rows.columns:
        rows = rows.with_columns(pl.col("problem").map_elements(stable_id, return_dtype=pl.String).alias("prompt_id"))
    if "id" not in rows.columns:
        rows = rows.with_columns(pl.Series("id", [str(offset + i) for i in range(height)]))
    if "sample" not in rows.columns:
        rows = rows.with_columns(pl.int_range(offset, offset + height).alias("sample"))
    if "reasoning" not in rows.columns or "response" not in rows.columns:
        split = [rewards.split_thinking(c or "") for c in rows["completion"].to_list()]
        rows = rows.with_columns(pl.Series("reasoning", [r for r, _ in split], pl.String), pl.Series("response", [a for _, a in split], pl.String))
    for name, dtype in (("answer", pl.String), ("finish_reason", pl.String), ("completion_tokens", pl.Int64), ("source", pl.String)):
        if name not in rows.columns:
            rows = rows.with_columns(pl.lit(None, dtype).alias(name))
    return rows.with_columns(pl.col("answer").cast(pl.String), pl.col("id").cast(pl.String), pl.col("prompt_id").cast(pl.String))


def _judge(rows: pl.DataFrame, rules: dict[str, rewards.Rule | rewards.Accuracy], cfg: FilterConfig) -> pl.DataFrame:
    """Scores and verdicts of every enabled check for one batch, and the first check each row fails."""
    completions = rows["completion"].fill_null("").to_list()
    # Each rule reads only the columns it names (answer, finish_reason, completion_tokens, the mode column).
    names = ["problem", "answer", "finish_reason", "completion_tokens", *([cfg.accuracy_column] if cfg.accuracy_column else []), *([cfg.tests_column] if "code" in cfg.checks else [])]
    columns = {name: rows[name].to_list() for name in names}
    judged: dict[str, list[rewards.Judgement]] = {}
    for check, reward in rules.items():
        try:
            judged[check] = reward.judge(completions, **columns)
        except ValueError as err:  # a routing column naming an unknown accuracy mode, tests in no known layout
            raise UsageError(f"{cfg.input}: {err}") from err
    failed = [None] * rows.height
    for check in cfg.checks:
        for i, judgement in enumerate(judged[check]):
            if failed[i] is None and not _passes(judgement):
                failed[i] = check
    length = rows["completion_tokens"].cast(pl.Int64).fill_null(rows["completion"].fill_null("").str.len_chars().cast(pl.Int64))
    invalid = (pl.col(PROBLEM).str.strip_chars() == "").fill_null(True).alias("invalid_problem")
    out = rows.select("id", "prompt_id", "sample", "source", "finish_reason", invalid).with_columns(length.alias("length"))
    for check in cfg.checks:
        out = out.with_columns(
            pl.Series(f"{check}_score", [j.score for j in judged[check]], pl.Float64),
            pl.Series(f"{check}_verdict", [j.verdict for j in judged[check]], pl.String),
        )
    return out.with_columns(pl.Series("failed_check", failed, pl.String))


def _passes(judgement: rewards.Judgement) -> bool:
    # "Cannot verify" verdicts (timeout, no_gold, unknown...) are not passes: a kept row is a checked row.
    return judgement.verdict in PASSING


def _prompt_drops(problems: pl.DataFrame, cfg: FilterConfig, benchmarks: list[tuple[str, list[str]]]) -> pl.DataFrame:
    """prompt_id, drop_reason (duplicate, near_duplicate, contaminated or null) and benchmark."""
    drops = problems.select("prompt_id").with_columns(pl.lit(None, pl.String).alias("drop_reason"), pl.lit(None, pl.String).alias("benchmark"))
    if cfg.dedup != "none":
        found = dedup(problems, mode=cfg.dedup, threshold=cfg.dedup_threshold).select("prompt_id", pl.col("drop_reason").alias("dup"))
        drops = drops.join(found, on="prompt_id", how="left", maintain_order="left").with_columns(pl.coalesce("drop_reason", "dup").alias("drop_reason")).drop("dup")
    if benchmarks:
        found = decontaminate(problems, benchmarks, n=cfg.ngram).select("prompt_id", pl.col("drop_reason").alias("cont"), pl.col("benchmark").alias("bench"))
        drops = drops.join(found, on="prompt_id", how="left", maintain_order="left").with_columns(
            pl.coalesce("drop_reason", "cont").alias("drop_reason"),
            pl.when(pl.col("drop_reason").is_null() & pl.col("cont").is_not_null()).then(pl.col("bench")).otherwise(pl.col("benchmark")).alias("benchmark"),
        ).drop("cont", "bench")
    return drops


def _select(scored: pl.DataFrame, prompt_drops: pl.DataFrame, cfg: FilterConfig) -> pl.DataFrame:
    """Pass rates, the pass-rate band, rejection sampling: adds pass_rate, keep and drop_reason."""
    correct = pl.col("failed_check").is_null()
    if "accuracy" in cfg.checks or "judge" in cfg.checks:
        correct = pl.col(f"{'judge' if 'judge' in cfg.checks else 'accuracy'}_verdict").is_in(["correct", "judge_correct"])
    # A sample that failed in generate (a server error) says nothing about how hard the prompt is.
    failed_generation = pl.col("finish_reason") == FINISH_ERROR
    rates = scored.group_by("prompt_id").agg(correct.filter(~failed_generation.fill_null(False)).mean().alias(PASS_RATE))
    scored = scored.join(rates, on="prompt_id", how="left", maintain_order="left").join(prompt_drops.select("prompt_id", pl.col("drop_reason").alias("prompt_drop")), on="prompt_id", how="left", maintain_order="left")
    band = pl.when(pl.col("pass_rate") < cfg.min_pass_rate).then(pl.lit("pass_rate_too_low")).when(pl.col("pass_rate") > cfg.max_pass_rate).then(pl.lit("pass_rate_too_high"))
    generation_error = pl.when(failed_generation).then(pl.lit(DROP_GENERATION_ERROR))
    invalid = pl.when("invalid_problem").then(pl.lit(DROP_INVALID_PROBLEM))
    scored = scored.with_columns(pl.coalesce(invalid, generation_error, "prompt_drop", band, "failed_check").alias("drop_reason"))
    scored = scored.drop("prompt_drop", "invalid_problem")
    policy, count = cfg.keep_policy()
    if policy != "all":
        order = ["length", "sample"] if policy == "shortest" else ["sample"]
        candidate = pl.col("drop_reason").is_null()
        # Rank among the prompt's passing samples only; the first K (by sample, or by length) stay.
        rank = pl.int_range(pl.len()).over(["prompt_id", candidate], order_by=order)
        scored = scored.with_columns(pl.when(candidate & (rank >= count)).then(pl.lit("rejection_sampling")).otherwise(pl.col("drop_reason")).alias("drop_reason"))
    return scored.with_columns(pl.col("drop_reason").is_null().alias("keep"))


def print_summary(summary: FilterSummary) -> None:
    rows = [("rows in", f"{summary.rows_in:,}"), ("failed in generate", f"{summary.generation_errors:,}")]
    rows += [(f"dropped: {reason}", f"{count:,}") for reason, count in summary.dropped.items()]
    rows += [("kept (reasoning)", f"{summary.kept:,}"), ("added (non-reasoning)", f"{summary.non_reasoning:,}")]
    summary_table(f"filter → {summary.output}", rows)
