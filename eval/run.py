"""r1distill eval: is the student better, and at what cost? pass@k and maj@k on reasoning benchmarks,
scored with the verifier that built the training data, and accuracy against thinking tokens.

    r1distill eval math500 -o runs/eval --model runs/student --model smollm2-135m -n 4 --max-tokens 4096
    r1distill eval aime24 -o runs/eval-r1 --backend vllm --model deepseek-ai/DeepSeek-R1-Distill-Qwen-32B --tensor-parallel-size 8 -n 64
    r1distill eval aime24 -o runs/eval-r1 --backend openai --base-url http://gpu-0:8000/v1 --model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B -n 64
    r1distill eval --completions runs/traces -o runs/scored        # completions made elsewhere, no model

1. Check every option, the benchmark (problems and gold answers) and every model before anything is
   written; a problem is one `UsageError`.
2. Per model, generate K samples per problem through the public `generate` function into
   OUT/generations/<model>/samples (its backends and crash-safe store as they are: a killed eval
   resumes without redoing finished samples; a larger -n adds only the missing ones). With
   --thinking-budget, each budget adds a budget-forcing run (budget.py).
3. Score every sample with `rewards.rule("accuracy")` in its killable Math-Verify workers: the same
   check filter selected with and rl optimises (score.py).
4. Compute pass@1, pass@k, maj@k, shares of truncated / unanswered / timed-out samples, token means,
   per --group-by value, and the test-time scaling curves (metrics.py); write OUT/samples.parquet and
   OUT/results.json with every setting that changes a score (record.py), and show the models side
   by side.

The scoring is redone from the stored samples on every run (it is cheap next to generation), so a
rerun with another --group-by or --accuracy reuses every sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson
import polars as pl

from r1distill import files, models, rewards
from r1distill.errors import StageError, UsageError
from r1distill.eval.benchmarks import load_benchmark, load_completions, read_traces, slug
from r1distill.eval.budget import budget_rows
from r1distill.eval.config import GENERATIONS, EvalConfig
from r1distill.eval.record import differences, load_results, model_settings, print_results, versions
from r1distill.eval.score import model_results, part_tokens, score, token_counter
from r1distill.generate import generate
from r1distill.generate.run import SharedBackend
from r1distill.generate.budget import FORCED_CUE, load_tokenizer, render_thinking_prompts
from r1distill.generate.failures import FailedRows
from r1distill.outputs import RESULTS, SAMPLES
from r1distill.redact import redact_settings
from r1distill.rewards.judge import CACHE_FILE, Judge, JudgedAccuracy
from r1distill.schema import PROMPT_ID, split_reasoning

log = logging.getLogger(__name__)


@dataclass
class EvalSummary:
    """What a run wrote, and the earlier results it was compared with."""

    output: str
    results: dict
    """results.json as written."""
    failures: FailedRows
    """Requests that failed in generate after their retries (left out of the scores; rerun to retry those not refused for good)."""
    compared: list[dict] = field(default_factory=list)
    """The --compare results, each with the settings in which it differs under `differences`."""


def _tokenizer(cfg: EvalConfig, model: str):
    """The tokenizer that renders budget-forcing prompts and counts tokens; None for a served model without --tokenizer."""
    return load_tokenizer(cfg.tokenizer or (None if cfg.backend == "openai" or cfg.completions else models.resolve(model)))


def _check_inputs(cfg: EvalConfig, columns: list[str]) -> None:
    """Problems with the models and --group-by columns, before anything is written."""
    missing = [column for column in cfg.group_by if column not in columns]
    if missing:
        raise UsageError(f"--group-by {missing[0]}: no such column (columns: {', '.join(columns)})")
    if cfg.completions is None and cfg.backend == "transformers":
        from r1distill.backends.hf import check_model

        for model in cfg.models:
            check_model(model)


def _generated(cfg: EvalConfig, prompts: pl.DataFrame, prompts_path: Path, model: str, tokenizer, budgets: list[int]) -> tuple[pl.DataFrame, FailedRows]:
    """Every sample of `model` (uncapped, then one set per budget) as eval scores it, and the requests that failed."""
    folder = Path(cfg.output) / GENERATIONS / slug(model)
    uncapped = cfg.generate_config(model, str(prompts_path), str(folder / "samples"))
    # One engine (or loaded model) for all of this model's runs, released before the next model's is built.
    shared = SharedBackend(uncapped) if SharedBackend.serves(uncapped) else None
    try:
        return _samples(cfg, prompts, prompts_path, model, tokenizer, budgets, folder, uncapped, shared)
    finally:
        if shared is not None:
            shared.close()


def _samples(cfg: EvalConfig, prompts: pl.DataFrame, prompts_path: Path, model: str, tokenizer, budgets: list[int], folder: Path,
             uncapped, shared: SharedBackend | None) -> tuple[pl.DataFrame, FailedRows]:
    failures = generate(uncapped, shared).failures
    count = token_counter(tokenizer)
    natural = read_traces(folder / "samples", prompts[PROMPT_ID], cfg.num_samples)
    thinking, response = part_tokens(natural["completion"].to_list(), count)
    parts = [natural.with_columns(pl.Series("thinking_tokens", thinking, pl.Int64), pl.Series("response_tokens", response, pl.Int64),
                                  pl.lit(None, pl.Int64).alias("budget"), pl.lit(False).alias("forced"))]
    for budget in budgets:
        rows, budget_failures = budget_rows(cfg, model, prompts_path, prompts, budget, folder, count, shared)
        failures += budget_failures
        split = [split_reasoning(completion) for completion in rows["completion"].to_list()]
        rows = rows.with_columns(
            pl.Series("reasoning", [reasoning for reasoning, _ in split], pl.String),
            pl.Series("response", [answer for _, answer in split], pl.String),
            pl.Series("response_tokens", count([answer for _, answer in split]), pl.Int64),
        )
        parts.append(rows.join(prompts, on=PROMPT_ID, how="left"))
    return pl.concat(parts, how="diagonal_relaxed"), failures


def evaluate(cfg: EvalConfig) -> EvalSummary:
    """Run the eval stage (see the module docstring); the CLI and the Python API both call this."""
    started = datetime.now(timezone.utc)
    cfg.check()
    budgets = cfg.budgets()
    compared = [load_results(path) for path in cfg.compare]
    out = Path(cfg.output)
    failures = FailedRows(0, 0, 0)
    if cfg.completions:
        rows = load_completions(cfg)
        _check_inputs(cfg, rows.columns)
        mode = cfg.rule_mode() or "math"
        benchmark = {"name": Path(cfg.completions).name, "source": cfg.completions, "problems": rows[PROMPT_ID].n_unique(), "accuracy": mode}
        tokenizers = dict.fromkeys(rows["model"].unique(maintain_order=True).to_list(), _tokenizer(cfg, ""))
        parts = []
        for model in tokenizers:
            mine = rows.filter(pl.col("model") == model)
            thinking, response = part_tokens(mine["completion"].to_list(), token_counter(tokenizers[model]))
            parts.append(mine.with_columns(pl.Series("thinking_tokens", thinking, pl.Int64), pl.Series("response_tokens", response, pl.Int64)))
        rows = pl.concat(parts).with_columns(pl.lit(None, pl.Int64).alias("budget"), pl.lit(False).alias("forced"))
    else:
        prompts, benchmark = load_benchmark(cfg)
        _check_inputs(cfg, prompts.columns)
        mode = benchmark["accuracy"]
        tokenizers = {model: _tokenizer(cfg, model) for model in cfg.models}
        # Rendered before anything is written: a template that cannot render them stops the run here (generate renders them again).
        for model in cfg.models if budgets else ():
            render_thinking_prompts(prompts, tokenizers[model], cfg)
        prompts_path = out / "prompts.parquet"
        out.mkdir(parents=True, exist_ok=True)
        files.write_parquet(prompts_path, prompts)
        parts = []
        for model in cfg.models:
            rows, model_failures = _generated(cfg, prompts, prompts_path, model, tokenizers[model], budgets)
            parts.append(rows)
            failures += model_failures
        rows = pl.concat(parts, how="diagonal_relaxed")
    log.info("scoring %d samples (%s)", rows.height, mode)
    if mode == "code" and cfg.accuracy == "judge":
        raise UsageError("--accuracy judge: this benchmark is checked by running code, which a judge does not replace; use --accuracy code")
    if mode == "code" and cfg.tests_column not in rows.columns:
        raise UsageError(f"--accuracy code: no column '{cfg.tests_column}' with the tests (columns: {', '.join(rows.columns)}); name it with --tests-column")
    accuracy = rewards.rule("code", **cfg.code_options(cfg.workers)) if mode == "code" else rewards.rule("accuracy", mode=mode, timeout=cfg.timeout, workers=cfg.workers)
    if cfg.accuracy == "judge":  # the benchmark's check, and the judge for what it cannot decide (verdicts cached in OUT)
        accuracy = JudgedAccuracy(accuracy, Judge(cfg, out / CACHE_FILE))
    with accuracy:
        scored = score(rows, accuracy, mode, "r1-zero" if cfg.template == "r1-zero" else "r1")
    if isinstance(accuracy, JudgedAccuracy) and (problem := accuracy.failure_problem()):
        raise StageError(f"{problem} in {out / CACHE_FILE}")
    results = _results(cfg, benchmark, budgets, scored, tokenizers, started)
    out.mkdir(parents=True, exist_ok=True)
    files.write_parquet(out / SAMPLES, scored)
    files.write_bytes(out / RESULTS, orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    for other in compared:
        other["differences"] = differences(results, other)
        if other["differences"]:
            log.warning("settings differ from %s: %s", other["_from"], "; ".join(other["differences"]))
    return EvalSummary(str(out), results, failures, compared)


def _results(cfg: EvalConfig, benchmark: dict, budgets: list[int], scored: pl.DataFrame, tokenizers: dict, started: datetime) -> dict:
    """results.json: the settings of the run, then per model its settings and every metric; credentials
    redacted (a --base-url password in the command, see redact.py), here so that --compare sees what is written."""
    generating = cfg.completions is None
    settings = {
        "benchmark": benchmark,
        "n": cfg.num_samples if generating else int(scored.group_by("model", PROMPT_ID).len()["len"].max()),
        "accuracy": benchmark["accuracy"],
        "verifier": {"timeout": cfg.timeout, "math_verify": versions(None)["math-verify"]} if benchmark["accuracy"] == "math" else {},
        "versions": versions(cfg.backend if generating else None),
        "workers": cfg.workers,
    }
    if cfg.accuracy == "judge":
        settings["judge"] = {"model": cfg.judge_model, "backend": cfg.judge_backend, "when": cfg.judge_when}
    if generating:
        settings |= {
            name: getattr(cfg, name) for name in ("backend", "max_tokens", "temperature", "top_p", "seed", "template", "system", "prompt_template")
        }
        if budgets:
            settings |= {"thinking_budgets": budgets, "answer_tokens": cfg.answer_tokens, "forced_cue": FORCED_CUE}
    entries = []
    for model, tokenizer in tokenizers.items():
        entries.append(
            {"model": model, "settings": model_settings(model, cfg.backend if generating else None, tokenizer, cfg.device),
             **model_results(scored.filter(pl.col("model") == model), cfg.group_by, budgets)}
        )
    return redact_settings({
        "r1distill": settings["versions"]["r1distill"],
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "command": cfg.command,
        "settings": settings,
        "models": entries,
    })


def print_summary(summary: EvalSummary) -> None:
    print_results([(None, summary.results)] + [(other["_from"], other) for other in summary.compared])
