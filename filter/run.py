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
import platform
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from r1distill import __version__
from r1distill.console import RowProgress, summary_table
from r1distill.data import read_table
from r1distill.errors import UsageError, first_line
from r1distill.filter import rewards
from r1distill.filter.dedup import dedup
from r1distill.filter.decontaminate import decontaminate, load_benchmark
from r1distill.filter.verify import VerifierPool
from r1distill.redact import redact_text
from r1distill.schema import MESSAGES, r1_layout, stable_id

log = logging.getLogger(__name__)

CHECKS = ("accuracy", "format", "language", "length", "truncated", "repetition")
ACCURACY_MODES = ("math", "choice", "exact")
KEEP_POLICIES = ("all", "first", "shortest")
NO_THINK_STYLES = ("none", "empty")
INPUT_COLUMNS = ("id", "prompt_id", "sample", "problem", "answer", "prompt", "completion", "reasoning", "response", "finish_reason", "completion_tokens", "source")

SFT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("prompt_id", pa.string()),
        pa.field("messages", MESSAGES),
        pa.field("kind", pa.string()),
        pa.field("source", pa.string()),
    ]
)


@dataclass
class FilterConfig:
    """Settings of one `r1distill filter` run."""

    input: str
    """Trace table: a `r1distill generate` output folder, or any dataset with problem and completion columns."""
    output: str
    """Output folder, laid out as a Hugging Face dataset repository."""
    checks: list[str] = field(default_factory=lambda: ["accuracy", "format", "language", "truncated", "repetition"])
    """Checks a kept row must pass, from CHECKS."""
    accuracy: str = "math"
    """How answers are checked: math (Math-Verify), choice (multiple-choice letters) or exact (string)."""
    accuracy_column: str | None = None
    """Column naming the accuracy mode per row (math, choice or exact), overriding `accuracy`."""
    lenient_format: bool = False
    """Accept completions of templates that pre-fill <think> (no opening tag)."""
    language: str = "en"
    """Target language of the reasoning (en, zh, ...)."""
    min_language_share: float = 0.95
    """Least share of the reasoning's words in the target language."""
    min_tokens: int | None = None
    """Fewest completion tokens a kept row may have (length check)."""
    max_tokens: int | None = None
    """Most completion tokens a kept row may have (length check)."""
    max_repetition: float = 0.5
    """Largest 4-gram repetition ratio a kept row may have."""
    keep: str = "all"
    """Rejection sampling among a prompt's passing samples: all, first:K or shortest:K."""
    min_pass_rate: float = 0.0
    """Drop prompts whose pass rate (correct / samples) is below this (too hard)."""
    max_pass_rate: float = 1.0
    """Drop prompts whose pass rate is above this (too easy)."""
    dedup: str = "exact"
    """Problem dedup: none, exact (normalised text) or near (MinHash LSH)."""
    dedup_threshold: float = 0.8
    """Jaccard similarity above which problems are near duplicates."""
    decontaminate: list[str] = field(default_factory=list)
    """Benchmark files or Hub datasets whose problems must not leak into the training set."""
    ngram: int = 8
    """Word n-gram length of the decontamination overlap."""
    non_reasoning: str | None = None
    """Conversations without thinking to mix in (messages, or problem/prompt + response columns)."""
    non_reasoning_ratio: float | None = None
    """Non-reasoning rows per kept reasoning row (R1 used about 200k / 600k = 0.33)."""
    non_reasoning_count: int | None = None
    """Non-reasoning rows to add, instead of a ratio."""
    no_think: str = "none"
    """How a non-reasoning answer is rendered: none (no think block) or empty (an empty think block)."""
    timeout: float = 5.0
    """Seconds Math-Verify may spend on one answer before the row is marked timeout."""
    workers: int | None = None
    """Math-Verify worker processes (default: the usable cores)."""
    batch_rows: int = 20_000
    """Rows read per streaming batch."""
    seed: int = 0
    """Seed of the non-reasoning sample."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the card."""

    def keep_policy(self) -> tuple[str, int | None]:
        policy, _, count = self.keep.partition(":")
        return policy, int(count) if count else None

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings."""
        problems = []
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            problems.append(f"--check {unknown[0]!r} is unknown; use {', '.join(CHECKS)}")
        if self.accuracy not in ACCURACY_MODES:
            problems.append(f"--accuracy must be one of {', '.join(ACCURACY_MODES)}, got {self.accuracy!r}")
        try:
            policy, count = self.keep_policy()
            if policy not in KEEP_POLICIES or (policy == "all") != (count is None) or (count is not None and count < 1):
                raise ValueError
        except ValueError:
            problems.append(f"--keep must be all, first:K or shortest:K with K >= 1, got {self.keep!r}")
        if not 0 <= self.min_pass_rate <= self.max_pass_rate <= 1:
            problems.append("--min-pass-rate and --max-pass-rate must satisfy 0 <= min <= max <= 1")
        if self.dedup not in ("none", "exact", "near"):
            problems.append(f"--dedup must be none, exact or near, got {self.dedup!r}")
        if not 0 < self.dedup_threshold <= 1:
            problems.append("--dedup-threshold must be in (0, 1]")
        if not 0 <= self.min_language_share <= 1:
            problems.append("--min-language-share must be in [0, 1]")
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
        if Path(self.output).exists() and (not Path(self.output).is_dir() or any(Path(self.output).iterdir())):
            problems.append(f"-o {self.output}: exists and is not empty; choose a new folder")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class FilterSummary:
    """The funnel of one run."""

    output: str
    rows_in: int
    kept: int
    non_reasoning: int
    dropped: dict[str, int]
    """Rows dropped per reason (the first reason that applied)."""


def filter_traces(cfg: FilterConfig) -> FilterSummary:
    """Run the filter stage (see the module docstring); the CLI and the Python API both call this."""
    started = datetime.now(timezone.utc)
    cfg.check()
    source = _open(cfg.input, (cfg.accuracy_column,) if cfg.accuracy_column else ())
    if "truncated" in cfg.checks and "finish_reason" not in source.columns:
        # Without finish reasons every row would be "unknown" and dropped: skip the check instead.
        log.warning("%s has no finish_reason column: the truncated check is skipped", cfg.input)
        cfg = replace(cfg, checks=[c for c in cfg.checks if c != "truncated"])
    benchmarks = [load_benchmark(b) for b in cfg.decontaminate]
    extra = _load_non_reasoning(cfg.non_reasoning) if cfg.non_reasoning else None
    scored, problems = _score(source, cfg)
    prompt_drops = _prompt_drops(problems, cfg, benchmarks)
    scored = _select(scored, prompt_drops, cfg)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside OUT and renamed into place: a crash never leaves half a dataset behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        kept = _write_sft(source, scored, staging, cfg, extra)
        scored_dir = staging / "scored"
        scored_dir.mkdir()
        scored.write_parquet(scored_dir / "scored-00000.parquet")
        stats = _stats(scored, prompt_drops, kept, cfg)
        (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (staging / "README.md").write_text(dataset_card(cfg, stats, started))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FilterSummary(str(out), stats["rows_in"], stats["kept"]["reasoning"], stats["kept"]["non_reasoning"], stats["dropped"])


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
    for name in ("problem", "completion"):
        if not pa.types.is_string(opened.schema.field(name).type) and not pa.types.is_large_string(opened.schema.field(name).type):
            raise UsageError(f"{source}: column '{name}' must hold text, it holds {opened.schema.field(name).type}")
    return opened


def _score(source: _Source, cfg: FilterConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pass 1: every row's scores and verdicts, and the first problem text of every prompt."""
    frames, problems = [], []
    offset = 0
    needs_math = "accuracy" in cfg.checks and (cfg.accuracy == "math" or cfg.accuracy_column is not None)
    pool = VerifierPool(**({"workers": cfg.workers} if cfg.workers else {}), timeout=cfg.timeout) if needs_math else nullcontext()
    with pool, RowProgress("filter: scoring", total=source.count(), generation=False) as progress:
        for batch in source.batches(cfg.batch_rows):
            rows = _normalize(pl.from_arrow(batch), offset)
            offset += rows.height
            frames.append(_judge(rows, cfg, pool))
            problems.append(rows.select("prompt_id", "problem").unique("prompt_id", keep="first", maintain_order=True))
            progress.advance(rows=rows.height)
    scored = pl.concat(frames)
    repeated = scored["id"].is_duplicated()
    if repeated.any():
        raise UsageError(f"{source.name}: column 'id' has duplicate id '{scored['id'][int(repeated.arg_max())]}'; each trace needs a unique id")
    return scored, pl.concat(problems).unique("prompt_id", keep="first", maintain_order=True)


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


def _judge(rows: pl.DataFrame, cfg: FilterConfig, pool: VerifierPool) -> pl.DataFrame:
    """Scores and verdicts of every enabled check for one batch, and the first check each row fails."""
    completions = rows["completion"].fill_null("").to_list()
    columns = {name: rows[name].to_list() for name in ("answer", "reasoning", "response", "finish_reason", "completion_tokens")}
    options = {
        "format": {"lenient": cfg.lenient_format},
        "language": {"language": cfg.language, "min_share": cfg.min_language_share},
        "length": {"min_tokens": cfg.min_tokens, "max_tokens": cfg.max_tokens},
        "repetition": {"max_ratio": cfg.max_repetition},
    }
    judged: dict[str, list[rewards.Judgement]] = {}
    for check in cfg.checks:
        if check == "accuracy":
            judged[check] = _accuracy(rows, cfg, pool)
        else:
            judged[check] = rewards.JUDGES[check](completions, **options.get(check, {}), **columns)
    failed = [None] * rows.height
    for check in cfg.checks:
        for i, judgement in enumerate(judged[check]):
            if failed[i] is None and not _passes(judgement):
                failed[i] = check
    length = rows["completion_tokens"].cast(pl.Int64).fill_null(rows["completion"].fill_null("").str.len_chars().cast(pl.Int64))
    out = rows.select("id", "prompt_id", "sample", "source").with_columns(length.alias("length"))
    for check in cfg.checks:
        out = out.with_columns(
            pl.Series(f"{check}_score", [j.score for j in judged[check]], pl.Float64),
            pl.Series(f"{check}_verdict", [j.verdict for j in judged[check]], pl.String),
        )
    return out.with_columns(pl.Series("failed_check", failed, pl.String))


PASSING = frozenset({"correct", "ok", "consistent", "complete"})


def _passes(judgement: rewards.Judgement) -> bool:
    # "Cannot verify" verdicts (timeout, no_gold, unknown...) are not passes: a kept row is a checked row.
    return judgement.verdict in PASSING


def _accuracy(rows: pl.DataFrame, cfg: FilterConfig, pool: VerifierPool) -> list[rewards.Judgement]:
    modes = rows[cfg.accuracy_column].to_list() if cfg.accuracy_column else [cfg.accuracy] * rows.height
    bad = [m for m in modes if m not in ACCURACY_MODES]
    if bad:
        raise UsageError(f"{cfg.input}: column '{cfg.accuracy_column}' holds {bad[0]!r}; use math, choice or exact")
    result: list[rewards.Judgement | None] = [None] * rows.height
    answers, responses, completions = rows["answer"].to_list(), rows["response"].to_list(), rows["completion"].fill_null("").to_list()
    math_rows = [i for i, m in enumerate(modes) if m == "math"]
    if math_rows:
        judged = pool.judge([answers[i] for i in math_rows], [responses[i] for i in math_rows])
        for i, judgement in zip(math_rows, judged):
            result[i] = judgement
    for mode in ("choice", "exact"):
        picked = [i for i, m in enumerate(modes) if m == mode]
        if picked:
            judged = rewards.JUDGES[mode]([completions[i] for i in picked], answer=[answers[i] for i in picked], response=[responses[i] for i in picked])
            for i, judgement in zip(picked, judged):
                result[i] = judgement
    return result  # type: ignore[return-value]


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
    correct = pl.col("accuracy_verdict") == "correct" if "accuracy" in cfg.checks else pl.col("failed_check").is_null()
    rates = scored.group_by("prompt_id").agg(correct.mean().alias("pass_rate"))
    scored = scored.join(rates, on="prompt_id", how="left", maintain_order="left").join(prompt_drops.select("prompt_id", pl.col("drop_reason").alias("prompt_drop")), on="prompt_id", how="left", maintain_order="left")
    band = pl.when(pl.col("pass_rate") < cfg.min_pass_rate).then(pl.lit("pass_rate_too_low")).when(pl.col("pass_rate") > cfg.max_pass_rate).then(pl.lit("pass_rate_too_high"))
    scored = scored.with_columns(pl.coalesce("prompt_drop", band, "failed_check").alias("drop_reason")).drop("prompt_drop")
    policy, count = cfg.keep_policy()
    if policy != "all":
        order = ["length", "sample"] if policy == "shortest" else ["sample"]
        candidate = pl.col("drop_reason").is_null()
        # Rank among the prompt's passing samples only; the first K (by sample, or by length) stay.
        rank = pl.int_range(pl.len()).over(["prompt_id", candidate], order_by=order)
        scored = scored.with_columns(pl.when(candidate & (rank >= count)).then(pl.lit("rejection_sampling")).otherwise(pl.col("drop_reason")).alias("drop_reason"))
    return scored.with_columns(pl.col("drop_reason").is_null().alias("keep"))


def _write_sft(source: _Source, scored: pl.DataFrame, out: Path, cfg: FilterConfig, extra: pl.DataFrame | None) -> dict[str, int]:
    """Pass 2: stream the kept rows into data/train-*.parquet, then the non-reasoning rows."""
    data = out / "data"
    data.mkdir(parents=True)
    kept = scored.filter("keep").select("id", pl.col("source").alias("kept_source"))
    parts: list[Path] = []
    reasoning_rows = 0
    offset = 0
    for batch in source.batches(cfg.batch_rows):
        rows = _normalize(pl.from_arrow(batch), offset)
        offset += rows.height
        rows = rows.join(kept, on="id", how="inner", maintain_order="left")
        if rows.height == 0:
            continue
        # Only a generate-style prompt (a list of messages) is reused; a plain-text prompt column is not.
        chat_prompt = "prompt" in rows.columns and isinstance(rows.schema["prompt"], pl.List)
        prompts = rows["prompt"].to_list() if chat_prompt else [None] * rows.height
        messages = [
            [m for m in (prompt or [{"role": "user", "content": problem}])] + [{"role": "assistant", "content": r1_layout(reasoning or "", response or "")}]
            for prompt, problem, reasoning, response in zip(prompts, rows["problem"].to_list(), rows["reasoning"].to_list(), rows["response"].to_list())
        ]
        table = pa.table(
            {
                "id": rows["id"].to_list(),
                "prompt_id": rows["prompt_id"].to_list(),
                "messages": messages,
                "kind": ["reasoning"] * rows.height,
                "source": rows["kept_source"].fill_null(Path(source.name).name).to_list(),
            },
            schema=SFT_SCHEMA,
        )
        parts.append(_write_part(data, len(parts), table))
        reasoning_rows += rows.height
    non_reasoning_rows = 0
    if extra is not None:
        if cfg.non_reasoning_count is not None:
            wanted = cfg.non_reasoning_count
        elif cfg.non_reasoning_ratio is not None:
            wanted = round(cfg.non_reasoning_ratio * reasoning_rows)
        else:
            wanted = extra.height
        if wanted > extra.height:
            log.warning("asked for %d non-reasoning rows, %s has %d: using all", wanted, cfg.non_reasoning, extra.height)
            wanted = extra.height
        picked = sorted(random.Random(cfg.seed).sample(range(extra.height), wanted))
        chosen = extra[picked]
        messages = [
            [m if m["role"] != "assistant" else {"role": "assistant", "content": _render_no_think(m["content"], cfg.no_think)} for m in conversation]
            for conversation in chosen["messages"].to_list()
        ]
        table = pa.table(
            {
                "id": chosen["id"].to_list(),
                "prompt_id": chosen["id"].to_list(),
                "messages": messages,
                "kind": ["non_reasoning"] * chosen.height,
                "source": [Path(cfg.non_reasoning).name] * chosen.height,
            },
            schema=SFT_SCHEMA,
        )
        if chosen.height:
            parts.append(_write_part(data, len(parts), table))
        non_reasoning_rows = chosen.height
    if not parts:
        parts.append(_write_part(data, 0, SFT_SCHEMA.empty_table()))
    for index, part in enumerate(parts):
        part.rename(data / f"train-{index:05d}-of-{len(parts):05d}.parquet")
    return {"reasoning": reasoning_rows, "non_reasoning": non_reasoning_rows}


def _write_part(folder: Path, index: int, table: pa.Table) -> Path:
    path = folder / f"part-{index:05d}.parquet"
    pq.write_table(table, path)
    return path


def _render_no_think(content: str, style: str) -> str:
    """A non-reasoning answer as the student should learn it: no think block, or an empty one."""
    content = content or ""
    if "</think>" in content:
        content = content.split("</think>", 1)[1].strip()
    return content if style == "none" else f"<think>\n\n</think>\n\n{content}"


def _load_non_reasoning(source: str) -> pl.DataFrame:
    """Conversations as `id` and `messages`, from a messages column or prompt/response columns."""
    frame = read_table(source)
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty")
    if "messages" in frame.columns:
        messages = frame["messages"].to_list()
        if not all(isinstance(c, list) and c and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in c) for c in messages):
            raise UsageError(f"{source}: column 'messages' must hold lists of {{role, content}}")
        if not all(any(m["role"] == "assistant" for m in c) for c in messages):
            row = next(i for i, c in enumerate(messages) if not any(m["role"] == "assistant" for m in c))
            raise UsageError(f"{source}: row {row} of 'messages' has no assistant turn")
    else:
        prompt = next((c for c in ("problem", "prompt", "question", "instruction") if c in frame.columns), None)
        answer = next((c for c in ("response", "completion", "answer", "output") if c in frame.columns), None)
        if prompt is None or answer is None:
            raise UsageError(f"{source}: needs a 'messages' column, or a problem/prompt column and a response/completion column (columns: {', '.join(frame.columns)})")
        messages = [[{"role": "user", "content": str(p)}, {"role": "assistant", "content": str(a)}] for p, a in zip(frame[prompt].to_list(), frame[answer].to_list())]
    ids = frame["id"].cast(pl.String).to_list() if "id" in frame.columns else [f"{Path(source).stem}-{i}" for i in range(frame.height)]
    return pl.DataFrame({"id": ids, "messages": messages})


def _stats(scored: pl.DataFrame, prompt_drops: pl.DataFrame, kept: dict[str, int], cfg: FilterConfig) -> dict:
    reasons = scored["drop_reason"].drop_nulls().value_counts(sort=True)
    prompts = scored.group_by("prompt_id").agg(pl.col("pass_rate").first(), pl.col("keep").any())
    histogram = Counter(min(int(rate * 10), 9) for rate in prompts["pass_rate"].to_list())
    contaminated = prompt_drops.filter(pl.col("drop_reason") == "contaminated")["benchmark"].value_counts(sort=True)
    verdicts = {
        check: dict(zip(*scored[f"{check}_verdict"].value_counts(sort=True).to_dict(as_series=False).values()))
        for check in cfg.checks
    }
    by_source = scored.filter("keep").group_by(pl.col("source").fill_null(Path(cfg.input).name)).len()
    return {
        "rows_in": scored.height,
        "prompts_in": prompts.height,
        "dropped": dict(zip(reasons["drop_reason"].to_list(), reasons["count"].to_list())),
        "kept": kept,
        "prompts_kept": int(prompts["keep"].sum()),
        "verdicts": verdicts,
        "pass_rate_histogram": {f"{b / 10:.1f}-{(b + 1) / 10:.1f}": histogram.get(b, 0) for b in range(10)},
        "contaminated_by_benchmark": dict(zip(contaminated["benchmark"].to_list(), contaminated["count"].to_list())),
        "kept_by_source": dict(zip(by_source["source"].to_list(), by_source["len"].to_list())),
    }


def dataset_card(cfg: FilterConfig, stats: dict, started: datetime) -> str:
    """README.md of the output: YAML metadata that `datasets` reads, the funnel, the command, versions."""
    from importlib.metadata import version

    total = stats["kept"]["reasoning"] + stats["kept"]["non_reasoning"]
    size = "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M" if total < 1_000_000 else "n>1M"
    funnel = [f"| rows in | {stats['rows_in']:,} |"]
    funnel += [f"| dropped: {reason} | {count:,} |" for reason, count in stats["dropped"].items()]
    funnel += [f"| kept (reasoning) | {stats['kept']['reasoning']:,} |", f"| added (non-reasoning) | {stats['kept']['non_reasoning']:,} |"]
    settings = {k: v for k, v in asdict(cfg).items() if k != "command"}
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
{redact_text(" ".join(cfg.command)) if cfg.command else "r1distill filter ..."}
```

Settings: `{redact_text(json.dumps(settings))}`

Versions: r1distill {__version__}, Python {platform.python_version()}, {", ".join(f"{k} {v}" for k, v in versions.items())}.
"""


def print_summary(summary: FilterSummary) -> None:
    rows = [("rows in", f"{summary.rows_in:,}")]
    rows += [(f"dropped: {reason}", f"{count:,}") for reason, count in summary.dropped.items()]
    rows += [("kept (reasoning)", f"{summary.kept:,}"), ("added (non-reasoning)", f"{summary.non_reasoning:,}")]
    summary_table(f"filter → {summary.output}", rows)
