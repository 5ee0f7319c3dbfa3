"""Which stage made a folder (told by its files), and each stage's output read into a small typed record.

Outputs can be large (a generate folder of a million traces, an rl metrics.jsonl with sample
completions at every step), so only the columns a section needs are read, texts are measured inside
polars' streaming engine rather than loaded, example traces are chosen by id before their text is
read, and metrics.jsonl is read a line at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from r1distill import models
from r1distill.errors import UsageError, first_line
from r1distill.outputs import MANIFEST_GLOB, RESULTS, SAMPLES, SHARD_GLOB, read_manifests
from r1distill.schema import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, scan_shards

log = logging.getLogger(__name__)

STAGES = ("generate", "filter", "sft", "distill", "rl", "eval")
"""Pipeline order: the order of the report's sections."""

# The files training/output.py and training/callbacks.py write; not imported from there, since that
# loads transformers (3 s) for two names (tests/test_report.py checks that they agree).
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"

EXPECTED = (
    "generate: traces-*.parquet + manifest*.json; filter: stats.json + data/; sft, distill and rl: run.json + metrics.jsonl; "
    "eval: results.json + samples.parquet"
)

TOKENIZED_ROWS = 1000
"""Most generate rows whose thinking and response are counted with the model's tokenizer."""
SHOWN_CHARACTERS = 6000
"""Longest text shown in an example; the rest is counted, not shown."""


def stage_of(folder: Path) -> str | None:
    """The stage whose output `folder` is, by the files it holds; None when it is none of them."""
    if (folder / RESULTS).is_file() and (folder / SAMPLES).is_file():
        return "eval"
    if (folder / "stats.json").is_file() and (folder / "data").is_dir():
        return "filter"
    if (folder / RUN_FILE).is_file() and (folder / METRICS_FILE).is_file():
        # run.json records the run's settings: only GRPO has completions per prompt, only distill a teacher.
        settings = _json(folder / RUN_FILE).get("settings", {})
        return "rl" if "num_generations" in settings else "distill" if "teacher" in settings else "sft"
    if any(folder.glob(SHARD_GLOB)) and any(folder.glob(MANIFEST_GLOB)):
        return "generate"
    return None


def _json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read it ({first_line(err)})") from err
    if not isinstance(found, dict):
        raise UsageError(f"{path}: not a JSON object")
    return found


@dataclass
class Example:
    """A trace or sample shown as it is: a title and labelled texts (all escaped when rendered)."""

    title: str
    parts: list[tuple[str, str]]


def _clip(text: str | None) -> str:
    if text is None:
        return "(none)"
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}\n… ({len(text) - SHOWN_CHARACTERS:,} more characters)"


@dataclass
class GenerateOutput:
    name: str
    path: Path
    settings: dict[str, object]
    """The manifest's row settings (model, template, temperature, ...)."""
    runs: int
    """Runs the manifests record."""
    rows: int
    prompts: int
    finish: dict[str, int]
    """Rows per finish reason (stop, length, error)."""
    error_reasons: dict[str, int]
    """Failed rows per reason code (the error text before its first colon), most common first."""
    sources: dict[str, int]
    """Rows per `source` value, or all rows under the input's name when there is no such column."""
    completion_tokens: int | None
    thinking: np.ndarray
    """Thinking tokens per row that has thinking (exact or estimated: `counted`)."""
    response: np.ndarray
    no_thinking: int
    """Rows (errors aside) without a thinking block."""
    counted: str
    """How the token counts were made, said in the section."""
    examples: list[Example]


def _newest(rows: pl.LazyFrame) -> pl.LazyFrame:
    # A row redone (a larger --max-tokens) sits beside its old version until the store compacts: the newest wins.
    return rows.sort("created_at").unique("id", keep="last")


def _counts(values: pl.Series) -> dict[str, int]:
    """Rows per value, most common first."""
    counted = values.value_counts(sort=True)
    return dict(zip(counted[values.name].to_list(), counted["count"].to_list()))


def read_generate(folder: Path, examples: int) -> GenerateOutput:
    """A generate output's counts and lengths over every row, and a few example traces."""
    scan = scan_shards(sorted(folder.glob(SHARD_GLOB)))
    columns = scan.collect_schema().names()
    manifests = [manifest for _, manifest in read_manifests(folder)]
    settings = manifests[0].get("settings", {}) if manifests else {}
    runs = [run for manifest in manifests for run in manifest.get("runs", [])]
    source = pl.col("source").cast(pl.String) if "source" in columns else pl.lit(None, pl.String)
    rows = _newest(scan.select(
        "id", "created_at", "finish_reason", "completion_tokens", "error", "prompt_id", source.alias("source"),
        pl.col("reasoning").str.len_chars().alias("reasoning_chars"), pl.col("response").str.len_chars().alias("response_chars"),
    )).collect(engine="streaming")
    failed = rows.filter(pl.col("finish_reason") == FINISH_ERROR)["error"].fill_null("unknown")
    if "source" in columns:
        sources = _counts(rows["source"].fill_null("(none)"))
    else:
        given = [run.get("options", {}).get("input") for run in runs]
        sources = {Path(given[-1]).name if given and given[-1] else "input": rows.height}
    answered = rows.filter(pl.col("finish_reason") != FINISH_ERROR)
    thinking, response, counted = _token_counts(scan, answered, str(settings.get("model", "")))
    total = rows["completion_tokens"].sum() if rows["completion_tokens"].null_count() < rows.height else None
    return GenerateOutput(
        folder.resolve().name, folder, settings, len(runs), rows.height, rows["prompt_id"].n_unique(), _counts(rows["finish_reason"]),
        _counts(failed.str.extract(r"^([^:]*)").str.slice(0, 60)), sources, total, thinking, response,
        int(answered["reasoning_chars"].null_count()), counted, _trace_examples(scan, rows, examples),
    )


def tokenizer_file(model: str) -> Path | None:
    """The model's tokenizer.json where it is already on this machine (a local folder, the embedded
    model's converted copy, the Hugging Face cache); None otherwise: nothing is downloaded."""
    if model in models.EMBEDDED:
        found = models.cache_dir() / "models" / model / "tokenizer.json"
        return found if found.is_file() else None
    if model and (Path(model) / "tokenizer.json").is_file():
        return Path(model) / "tokenizer.json"
    if model.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "tokenizer.json")
        except ValueError:  # not a valid repository id
            return None
        return Path(cached) if isinstance(cached, str) else None
    return None


def _token_counts(scan: pl.LazyFrame, answered: pl.DataFrame, model: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Thinking and response tokens per answered row, and how they were counted.

    The model's own tokenizer, where it is local, counts a sample of rows exactly. Otherwise each
    row's completion_tokens (exact, from the backend) is split between thinking and response by their
    share of its characters; a row without completion_tokens is estimated at 4 characters a token.
    """
    found = tokenizer_file(model)
    if found is not None:
        from tokenizers import Tokenizer

        sampled = answered.height > TOKENIZED_ROWS
        chosen = (answered.sample(TOKENIZED_ROWS, seed=0) if sampled else answered)["id"].to_list()
        texts = _newest(scan.filter(pl.col("id").is_in(chosen)).select("id", "created_at", "reasoning", "response")).collect()
        tokenizer = Tokenizer.from_file(str(found))
        reasoning = [text for text in texts["reasoning"].to_list() if text is not None]
        thinking = [len(e.ids) for e in tokenizer.encode_batch(reasoning, add_special_tokens=False)] if reasoning else []
        response = [len(e.ids) for e in tokenizer.encode_batch(texts["response"].fill_null("").to_list(), add_special_tokens=False)]
        where = f"{TOKENIZED_ROWS:,} rows sampled at random" if sampled else "every row"
        return np.array(thinking, float), np.array(response, float), f"counted with the model's tokenizer ({found}) on {where}"
    chars = pl.col("reasoning_chars").fill_null(0) + pl.col("response_chars").fill_null(0)
    share = pl.when(chars > 0).then(pl.col("reasoning_chars").fill_null(0) / chars).otherwise(0.0)
    tokens = pl.col("completion_tokens").cast(pl.Float64)
    split = answered.select(
        pl.when(tokens.is_null()).then(pl.col("reasoning_chars") / 4).otherwise(tokens * share).alias("thinking"),
        pl.when(tokens.is_null()).then(pl.col("response_chars") / 4).otherwise(tokens * (1 - share)).alias("response"),
        pl.col("reasoning_chars").is_not_null().alias("has_thinking"),
    )
    unknown = int(answered["completion_tokens"].null_count())
    note = (
        "estimated on every row: the model's tokenizer is not on this machine, so each row's completion_tokens (exact) is split "
        "between thinking and response by their share of its characters"
        + (f"; {unknown:,} rows without completion_tokens at 4 characters a token" if unknown else "")
    )
    return split.filter("has_thinking")["thinking"].to_numpy(), split["response"].to_numpy(), note


def _trace_examples(scan: pl.LazyFrame, rows: pl.DataFrame, count: int) -> list[Example]:
    """Up to `count` traces, one per finish reason first (stop, length, error), then at random; seeded."""
    chosen: list[str] = []
    for reason in (FINISH_STOP, FINISH_LENGTH, FINISH_ERROR):
        part = rows.filter(pl.col("finish_reason") == reason)
        if part.height and len(chosen) < count:
            chosen.append(part.sample(1, seed=0)["id"].item())
    rest = rows.filter(~pl.col("id").is_in(chosen))
    chosen += rest.sample(min(rest.height, count - len(chosen)), seed=0)["id"].to_list()
    if not chosen:
        return []
    wanted = ["id", "created_at", "problem", "reasoning", "response", "finish_reason", "completion_tokens", "error"]
    found = _newest(scan.filter(pl.col("id").is_in(chosen)).select(wanted)).collect()
    by_id = {row["id"]: row for row in found.iter_rows(named=True)}
    shown = []
    for key in chosen:
        row = by_id[key]
        tokens = f"{row['completion_tokens']:,} tokens" if row["completion_tokens"] is not None else "tokens unknown"
        parts = [("problem", _clip(row["problem"])), ("thinking", _clip(row["reasoning"])), ("response", _clip(row["response"]))]
        if row["error"]:
            parts.append(("error", _clip(row["error"])))
        shown.append(Example(f"{key} · {row['finish_reason']} · {tokens}", parts))
    return shown


@dataclass
class FilterOutput:
    name: str
    path: Path
    rows_in: int
    generation_errors: int
    prompts_in: int
    prompts_kept: int
    dropped: dict[str, int]
    """Rows dropped per first reason, most common first."""
    kept: int
    """Reasoning rows kept."""
    added: int
    """Non-reasoning rows mixed in."""
    pass_rates: dict[str, int]
    """Prompts per pass-rate bucket ("0.0-0.1", ...)."""
    verdicts: dict[str, dict[str, int]]
    """Per check, rows per verdict."""
    contaminated: dict[str, int]
    """Prompts dropped as contaminated, per benchmark."""
    by_source: dict[str, int]
    """Kept rows per source."""
    hints: list[str]
    decided_by: dict[str, int]
    """Rows of the judge check decided by the rules, the judge or neither ({} without the judge check)."""


_WHOLE, _COUNTS = (int, "a whole number"), ((dict, int), "an object of counts")
# What each stats.json key that filter writes (filter/card.py funnel_stats) holds: (shape, said as); a
# shape is a type or (container, what it holds).
_FILTER_STATS = {
    "rows_in": _WHOLE, "generation_errors": _WHOLE, "prompts_in": _WHOLE, "prompts_kept": _WHOLE, "dropped": _COUNTS, "kept": _COUNTS,
    "verdicts": ((dict, (dict, int)), "an object of counts per check"), "pass_rate_histogram": _COUNTS,
    "contaminated_by_benchmark": _COUNTS, "kept_by_source": _COUNTS, "hints": ((list, str), "a list of texts"), "decided_by": _COUNTS,
}


def _fits(value: object, shape) -> bool:
    if isinstance(shape, tuple):
        container, inner = shape
        items = value.values() if isinstance(value, dict) else value
        return isinstance(value, container) and all(_fits(item, inner) for item in items)
    return isinstance(value, shape) and not (shape is int and isinstance(value, bool))


def read_filter(folder: Path) -> FilterOutput:
    path = folder / "stats.json"
    stats = _json(path)
    for key, (shape, said) in _FILTER_STATS.items():
        if key in stats and not _fits(stats[key], shape):
            raise UsageError(
                f"{path}: '{key}' must be {said}, it is {json.dumps(stats[key])[:60]}; "
                "rerun `r1distill filter` to write it again, or leave this folder out of the report"
            )
    kept = stats.get("kept", {})
    return FilterOutput(
        folder.resolve().name, folder, stats.get("rows_in", 0), stats.get("generation_errors", 0), stats.get("prompts_in", 0),
        stats.get("prompts_kept", 0), stats.get("dropped", {}), kept.get("reasoning", 0), kept.get("non_reasoning", 0),
        stats.get("pass_rate_histogram", {}), stats.get("verdicts", {}), stats.get("contaminated_by_benchmark", {}),
        stats.get("kept_by_source", {}), stats.get("hints", []), stats.get("decided_by", {}),
    )


@dataclass
class TrainingRun:
    name: str
    path: Path
    stage: str
    """sft, distill or rl."""
    settings: dict[str, object]
    """The run's settings as run.json records them."""
    template: str | None
    finished: dict | None
    """run.json's record of the end (steps, last loss or reward); None while running or after a kill."""
    points: list[dict[str, float]]
    """The numbers of every metrics.jsonl line, with its step."""
    first_samples: tuple[int, list[dict]] | None
    """rl: the sample completions of the first logged step, with the step."""
    last_samples: tuple[int, list[dict]] | None
    unreadable: int
    """Lines that were not JSON (a kill can cut the last one short)."""


def read_training(folder: Path, stage: str) -> TrainingRun:
    record = _json(folder / RUN_FILE)
    points: list[dict[str, float]] = []
    first = last = None
    unreadable = 0
    with (folder / METRICS_FILE).open(encoding="utf-8") as lines:
        for line in lines:
            try:
                logged = json.loads(line)
            except ValueError:
                unreadable += 1
                continue
            if not isinstance(logged, dict):
                unreadable += 1
                continue
            points.append({key: float(value) for key, value in logged.items() if isinstance(value, (int, float)) and not isinstance(value, bool)})
            if isinstance(logged.get("samples"), list) and logged["samples"]:
                last = (int(logged.get("step", 0)), logged["samples"])
                first = first or last
    return TrainingRun(folder.resolve().name, folder, stage, record.get("settings", {}), record.get("template"), record.get("finished"),
                       points, first, last, unreadable)


def rl_examples(samples: list[dict]) -> list[Example]:
    """The sample completions metrics.jsonl keeps for one rl step, as examples."""
    shown = []
    for i, sample in enumerate(samples):
        rewards = ", ".join(f"{name} {score}" for name, score in (sample.get("rewards") or {}).items())
        verdicts = ", ".join(f"{name} {verdict}" for name, verdict in (sample.get("verdicts") or {}).items())
        title = f"sample {i + 1} · {sample.get('finish_reason', '?')} · {rewards or 'no rewards'}"
        shown.append(Example(title, [("prompt", _clip(str(sample.get("prompt")))), ("completion", _clip(str(sample.get("completion")))),
                                     ("verdicts", verdicts or "(none)")]))
    return shown


@dataclass
class Metrics:
    """One model's (or group's) numbers in results.json; None where the file does not have them."""

    problems: int | None
    samples: int | None
    pass1: float | None
    pass1_stderr: float | None
    pass_at: dict[str, float | None]
    """pass@k per k (as text: "1", "2", ...)."""
    maj_at: dict[str, float | None]
    truncated: float | None
    no_answer: float | None
    generation_errors: int | None
    generation_refused: int | None
    """Of the generation errors, requests the server refused for good (within eval's --max-failed)."""
    thinking: float | None
    """Mean thinking tokens."""
    response: float | None
    completion: float | None
    judge: dict | None
    """eval --accuracy judge: rule, judge, both and any correct, the decided counts and the disagreeing samples."""
    format_pass: float | None = None
    """Share of completions in R1's layout (the format check), averaged over problems; None in results written before it."""
    format_pass_stderr: float | None = None
    thinking_stderr: float | None = None
    """Standard error of the mean thinking tokens."""

    @classmethod
    def read(cls, found: dict) -> Metrics:
        return cls(
            found.get("problems"), found.get("samples"), found.get("pass@1"), found.get("pass@1_stderr"), found.get("pass@k") or {},
            found.get("maj@k") or {}, found.get("truncated"), found.get("no_answer"), found.get("generation_errors"),
            found.get("generation_refused"), found.get("mean_thinking_tokens"), found.get("mean_response_tokens"), found.get("mean_completion_tokens"),
            found.get("judge") if isinstance(found.get("judge"), dict) else None,
            found.get("format_pass"), found.get("format_pass_stderr"), found.get("mean_thinking_tokens_stderr"),
        )


@dataclass
class CurvePoint:
    """A point of a test-time scaling curve: pass@1 at a thinking budget (forced), uncapped (natural) or cut at max tokens."""

    limit: int | None
    """The budget or max tokens; None for the natural, uncapped run."""
    pass1: float | None
    thinking: float | None
    """Mean thinking tokens (budget forcing and natural); None for the cut curve."""
    share: float | None
    """Share of samples forced at the budget, or cut at max tokens."""


@dataclass
class ModelResult:
    model: str
    metrics: Metrics
    groups: dict[str, dict[str, Metrics]]
    """Per --group-by column, per value."""
    natural: CurvePoint | None
    forced: list[CurvePoint]
    cut: list[CurvePoint]


@dataclass
class EvalOutput:
    name: str
    path: Path
    benchmark: str
    settings: dict[str, object]
    """The sampling settings shown above the table (n, temperature, max tokens, ...)."""
    models: list[ModelResult]


def read_eval(folder: Path) -> EvalOutput:
    results = _json(folder / RESULTS)
    settings = results.get("settings", {})
    benchmark = settings.get("benchmark", {})
    shown = {name: settings[name] for name in ("n", "temperature", "top_p", "max_tokens", "template", "backend", "accuracy", "thinking_budgets")
             if settings.get(name) is not None}
    entries = []
    for entry in results.get("models", []):
        budget = entry.get("thinking_budget") or {}
        natural = budget.get("natural")
        entries.append(ModelResult(
            str(entry.get("model")), Metrics.read(entry.get("metrics", {})),
            {column: {value: Metrics.read(found) for value, found in values.items()} for column, values in (entry.get("groups") or {}).items()},
            CurvePoint(None, natural.get("pass@1"), natural.get("mean_thinking_tokens"), 0.0) if natural else None,
            [CurvePoint(p.get("budget"), p.get("pass@1"), p.get("mean_thinking_tokens"), p.get("forced")) for p in budget.get("forced", [])],
            [CurvePoint(p.get("max_tokens"), p.get("pass@1"), None, p.get("cut")) for p in budget.get("cut", [])],
        ))
    name = benchmark.get("name", "?") if isinstance(benchmark, dict) else str(benchmark)
    problems = benchmark.get("problems") if isinstance(benchmark, dict) else None
    if problems is not None:
        shown = {"problems": problems, **shown}
    return EvalOutput(folder.resolve().name, folder, str(name), shown, entries)
