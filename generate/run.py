"""r1distill generate: a teacher writes long chain-of-thought traces for a prompt table.

Generation is the expensive stage (100k prompts x 4 samples x 16k tokens is GPU-days), so it is built
to never lose or repeat finished work:

1. Check every option and the input up front; a problem is one `UsageError` and nothing is written.
2. Plan one request per (prompt, sample). Its `request_key` hashes everything besides the sample index
   (which is in the row id) and max_tokens that changes the output: model, prompt id, messages,
   template, temperature, top_p and seed.
3. Compare with what OUT already holds. A row is done when its key matches and it either stopped, or
   was cut off at a budget at least as large as this run's. So a rerun after a crash generates only
   what is missing, a rerun with a larger --max-tokens redoes only the truncated rows, and failed rows
   are retried, except permanent failures (a 4xx refusal, a prompt too long) without --retry-failed.
   A row made with other settings is a conflict: OUT is a single-configuration dataset.
4. Generate the rest with the chosen backend, journaling each result as it arrives (see store.py),
   behind a live progress bar. A server backend first sends one preflight request, before OUT is
   touched, so a wrong URL, model or key is one line and leaves nothing behind.
5. Drop superseded rows, write the manifest (settings, versions, counts) and print the summary,
   which names the most common failure reasons and what to check for each.

`--shard i/N` keeps the prompts whose stable hash falls in part i of N, so N machines can share one OUT.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib.util
import json
import logging
import os
import platform
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

from r1distill import __version__
from r1distill.console import RowProgress, summary_table
from r1distill.data import load_prompts
from r1distill.errors import UsageError
from r1distill.generate.backends import Backend, Request, Result, Sampling, failure_hint, failure_reason, is_permanent
from r1distill.generate.prompts import TEMPLATES, build_messages, full_completion, split_reasoning
from r1distill.generate.store import TraceStore, now_us, read_state
from r1distill.redact import redact_text, redact_url
from r1distill.schema import ANSWER, PROBLEM, PROMPT_ID, TRACE_SCHEMA, stable_id, trace_id, trace_table

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "openai", "vllm")


@dataclass
class GenerateConfig:
    """Settings of one `r1distill generate` run."""

    input: str
    """Prompt table: a file, a folder of Parquet shards, a save_to_disk folder or a Hub dataset id."""
    output: str
    """Output folder for the trace shards and the manifest; reruns resume into it."""
    model: str = "smollm2-135m"
    """Teacher model: the embedded alias, a Hub id or local folder, or the served model name."""
    backend: str = "transformers"
    """transformers (local CPU/GPU), openai (any OpenAI-compatible server) or vllm (offline, GPUs)."""
    num_samples: int = 1
    """Completions per prompt."""
    max_tokens: int = 4096
    """Most tokens generated per completion."""
    temperature: float = 0.6
    """Sampling temperature (DeepSeek recommends 0.5-0.7 for R1); 0 is greedy."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    seed: int = 0
    """Base seed; each (prompt, sample) derives its own from it."""
    template: str = "chat"
    """chat (the model's chat template) or r1-zero (the R1-Zero paper prompt as raw text)."""
    system: str | None = None
    """System prompt for the chat template."""
    prompt_template: str | None = None
    """User turn with {problem}; default asks for step-by-step reasoning and a \\boxed{} answer."""
    base_urls: list[str] = field(default_factory=list)
    """OpenAI-compatible base URLs (…/v1); several spread the load. A user:password@ in one is sent as basic auth."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable that holds the API key (never logged or written)."""
    concurrency: int = 64
    """Requests in flight at once (openai backend)."""
    shard: str = "0/1"
    """Part i/N of the prompts this process generates (0-based), for N machines sharing one OUT."""
    problem_column: str = PROBLEM
    """Input column holding the problem text."""
    answer_column: str | None = None
    """Input column holding the gold answer (default: 'answer' when present)."""
    id_column: str | None = None
    """Input column holding a unique prompt id (default: 'id' when present, else a hash of the problem)."""
    split: str = "train"
    """Split to read from Hub datasets and save_to_disk folders."""
    batch_size: int = 8
    """Prompts per forward batch (transformers) or per scheduling chunk (vllm)."""
    max_retries: int = 8
    """Retries of a failed request before it is recorded as an error (openai backend)."""
    request_timeout: float = 1800.0
    """Seconds one request may take before it is retried (openai backend)."""
    retry_delay: float = 1.0
    """First retry waits up to this many seconds, doubling each retry, with full jitter."""
    retry_failed: bool = False
    """Also retry rows that failed permanently in an earlier run (a 4xx refusal such as 400 or 401, prompt_too_long)."""
    rows_per_shard: int = 1000
    """Rows per Parquet shard."""
    seconds_per_shard: float = 60.0
    """A shard is also written after this many seconds, so a long run shows its traces early."""
    device: str | None = None
    """Torch device for the transformers backend (default: cuda when available, else cpu)."""
    tensor_parallel_size: int = 1
    """GPUs per model replica (vllm)."""
    data_parallel_size: int = 1
    """Model replicas, one process each on its own GPUs and its own shard of the prompts (vllm)."""
    command: list[str] = field(default_factory=list)
    """The command line that started the run, recorded in the manifest."""

    def shard_parts(self) -> tuple[int, int]:
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings."""
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.template not in TEMPLATES:
            problems.append(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.prompt_template is not None and "{problem}" not in self.prompt_template:
            problems.append(f"--prompt-template must contain {{problem}}, got {self.prompt_template!r}")
        for name, value, low in (
            ("--num-samples", self.num_samples, 1),
            ("--max-tokens", self.max_tokens, 1),
            ("--concurrency", self.concurrency, 1),
            ("--batch-size", self.batch_size, 1),
            ("--max-retries", self.max_retries, 0),
            ("--rows-per-shard", self.rows_per_shard, 1),
            ("--tensor-parallel-size", self.tensor_parallel_size, 1),
            ("--data-parallel-size", self.data_parallel_size, 1),
        ):
            if value < low:
                problems.append(f"{name} must be at least {low}, got {value}")
        if self.temperature < 0:
            problems.append(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.request_timeout <= 0 or self.retry_delay < 0:
            problems.append("--request-timeout must be > 0 and --retry-delay >= 0")
        try:
            index, count = self.shard_parts()
            if not 0 <= index < count:
                raise ValueError
        except ValueError:
            problems.append(f"--shard must be i/N with 0 <= i < N, got {self.shard!r}")
        if self.backend == "openai":
            if not self.base_urls:
                problems.append("--backend openai needs --base-url (for example http://localhost:8000/v1)")
            bad = [url for url in self.base_urls if not url.startswith(("http://", "https://"))]
            if bad:
                problems.append(f"--base-url must start with http:// or https://, got {redact_text(bad[0])!r}")
        elif self.base_urls:
            problems.append(f"--base-url only applies to --backend openai, not {self.backend}")
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            problems.append("--backend vllm needs vLLM on a GPU machine: pip install 'r1distill[vllm]'")
        if self.data_parallel_size > 1 and self.backend != "vllm":
            problems.append("--data-parallel-size only applies to --backend vllm (use --shard for the others)")
        if Path(self.output).exists() and not Path(self.output).is_dir():
            problems.append(f"-o {self.output}: exists and is not a folder")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class GenerateSummary:
    """What a run left in OUT for its prompts."""

    output: str
    rows: int
    """(prompt, sample) pairs this run is responsible for."""
    present: int
    """Of those, rows in OUT (any finish reason)."""
    generated: int
    """Rows generated by this run."""
    truncated: int
    """Rows cut off at max_tokens."""
    failed: int
    """Rows that failed after their retries (retried by the next run, the permanent ones with --retry-failed)."""
    permanent: int
    """Of the failed rows, those that failed permanently (a 4xx refusal, prompt_too_long)."""
    failure_reasons: dict[str, int]
    """Failed rows per reason code (http_401, timeout, ...), most common first."""
    completion_tokens: int
    """Generated tokens over all present rows."""
    wall_seconds: float


@dataclass(slots=True)
class _Planned:
    prompt_id: str
    sample: int
    problem: str
    answer: str | None
    request: Request
    request_key: str


def generate(cfg: GenerateConfig) -> GenerateSummary:
    """Run the generate stage (see the module docstring); the CLI and the Python API both call this."""
    started = datetime.now(timezone.utc)
    cfg.check()
    if cfg.backend == "vllm" and cfg.data_parallel_size > 1:
        return _data_parallel(cfg, started)
    with _fewer_collections():
        prompts = _my_prompts(cfg)
        plan = _plan(prompts, cfg)
    api_key = os.environ.get(cfg.api_key_env) if cfg.backend == "openai" else None
    backend = None
    if cfg.backend == "openai":
        # Before OUT is touched: a wrong URL, model or key is one line, not a folder of failed rows.
        backend = make_backend(cfg, api_key)
        backend.preflight(raw=cfg.template == "r1-zero")
    index, count = cfg.shard_parts()
    out = Path(cfg.output)
    generated = 0
    with TraceStore(out, f"{index:05d}-of-{count:05d}", _table_builder(prompts), cfg.rows_per_shard, cfg.seconds_per_shard) as store:
        todo, redo = _pending(plan, read_state(out), cfg.max_tokens, cfg.retry_failed)
        log.info("%d prompts x %d samples: %d rows to generate (%d already done)", prompts.height, cfg.num_samples, len(todo), len(plan) - len(todo))
        if todo:
            backend = backend or make_backend(cfg, api_key)
            try:
                generated = _drive(backend, todo, store, cfg, total=len(plan))
            finally:
                backend.close()
        store.flush()
        # Also after a run that redid nothing: an earlier one may have died between its redo and its compaction.
        if redo or _has_superseded_rows(out):
            store.compact()
    summary = _summarize(out, [p.request.key for p in plan], generated, started)
    _write_manifest(cfg, summary, started, prompts.height)
    return summary


def _my_prompts(cfg: GenerateConfig) -> pl.DataFrame:
    prompts = load_prompts(cfg.input, cfg.problem_column, cfg.answer_column, cfg.id_column, cfg.split)
    index, count = cfg.shard_parts()
    if count > 1:
        part = prompts[PROMPT_ID].map_elements(lambda pid: int(stable_id(pid), 16) % count, return_dtype=pl.Int64)
        prompts = prompts.filter(part == index)
    return prompts


def _plan(prompts: pl.DataFrame, cfg: GenerateConfig) -> list[_Planned]:
    settings = orjson.dumps([cfg.model, cfg.template, cfg.temperature, cfg.top_p, cfg.seed])
    raw = cfg.template == "r1-zero"
    plan = []
    for prompt_id, problem, answer in zip(prompts[PROMPT_ID].to_list(), prompts[PROBLEM].to_list(), prompts[ANSWER].to_list()):
        messages = build_messages(problem, cfg.template, cfg.system, cfg.prompt_template)
        # The sample index is in the row id, so one key per prompt covers every setting that matters.
        key = hashlib.sha256(settings + orjson.dumps([prompt_id, messages])).hexdigest()[:32]
        first_seed = int(key[:8], 16)
        for sample in range(cfg.num_samples):
            request = Request(trace_id(prompt_id, sample), messages, raw, (first_seed + sample) & 0x7FFFFFFF)
            plan.append(_Planned(prompt_id, sample, problem, answer, request, key))
    return plan


def _pending(plan: list[_Planned], state: pl.DataFrame, max_tokens: int, retry_failed: bool) -> tuple[list[_Planned], int]:
    """The planned rows still to generate, and how many of them replace a row already in OUT."""
    existing = {row[0]: row for row in state.select("id", "request_key", "finish_reason", "max_tokens", "error").iter_rows()}
    conflicts = [p for p in plan if p.request.key in existing and existing[p.request.key][1] != p.request_key]
    if conflicts:
        first = conflicts[0].request.key
        raise UsageError(
            f"OUT already holds {len(conflicts)} of these (prompt, sample) rows made with other settings "
            f"(model, template, prompts, temperature, top_p or seed; first: '{first}'); write to a new -o folder"
        )
    todo, redo, kept_failures = [], 0, 0
    for planned in plan:
        row = existing.get(planned.request.key)
        if row is None:
            todo.append(planned)
            continue
        _, _, finish, budget, error = row
        if finish == "stop" or (finish == "length" and budget >= max_tokens):
            continue
        if finish == "error" and not retry_failed and is_permanent(failure_reason(error)):
            kept_failures += 1
            continue
        todo.append(planned)
        redo += 1
    if kept_failures:
        log.info("%d rows failed permanently in an earlier run and are not retried (add --retry-failed to retry them)", kept_failures)
    return todo, redo


def _has_superseded_rows(out: Path) -> bool:
    files = sorted(out.glob("traces-*.parquet"))
    return bool(files) and pl.scan_parquet(files).select(pl.col("id").is_duplicated().any()).collect().item()


def make_backend(cfg: GenerateConfig, api_key: str | None) -> Backend:
    """The backend named by cfg.backend; heavy imports happen only here."""
    sampling = Sampling(cfg.max_tokens, cfg.temperature, cfg.top_p)
    if cfg.backend == "openai":
        from r1distill.generate.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(
            cfg.model, sampling, cfg.base_urls, api_key, cfg.concurrency, cfg.max_retries, cfg.request_timeout, cfg.retry_delay
        )
    if cfg.backend == "vllm":
        from r1distill.generate.backends.vllm_offline import VLLMBackend

        return VLLMBackend(cfg.model, sampling, cfg.tensor_parallel_size, max(cfg.batch_size, 256), cfg.seed)
    from r1distill.generate.backends.hf import TransformersBackend

    return TransformersBackend(cfg.model, sampling, cfg.batch_size, cfg.device, cfg.seed)


def _drive(backend: Backend, todo: list[_Planned], store: TraceStore, cfg: GenerateConfig, total: int) -> int:
    by_key = {planned.request.key: planned for planned in todo}
    generated = 0

    with RowProgress(f"generate {cfg.model}", total=total, done=total - len(todo)) as progress:

        def emit(result: Result) -> None:
            nonlocal generated
            store.append(_row(by_key[result.key], result, cfg))
            generated += 1
            progress.advance(result.completion_tokens or 0, result.finish_reason == "error")

        requests = [planned.request for planned in todo]
        with _fewer_collections():
            asyncio.run(backend.run(requests, emit))
    return generated


@contextmanager
def _fewer_collections():
    """Keep the garbage collector off the hot path of a long run.

    The plan is hundreds of thousands of long-lived objects and every HTTP request allocates dozens:
    with the default thresholds the collector rescans them so often that it costs a quarter of the
    client's throughput and most of the planning time (benchmarks/openai_client.py). Freezing what
    exists and collecting young objects every 50k allocations instead of 700 removes that; cycles
    are still collected.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _row(planned: _Planned, result: Result, cfg: GenerateConfig) -> dict:
    """One journal row: the trace columns except the carried input columns."""
    reasoning, response = split_reasoning(result.text, prefilled_think=result.prefilled_think, reasoning=result.reasoning)
    return {
        "id": planned.request.key,
        PROMPT_ID: planned.prompt_id,
        "sample": planned.sample,
        PROBLEM: planned.problem,
        ANSWER: planned.answer,
        "prompt": planned.request.messages,
        "completion": full_completion(result.text, result.reasoning),
        "reasoning": reasoning,
        "response": response,
        "finish_reason": result.finish_reason,
        "completion_tokens": result.completion_tokens,
        "prompt_tokens": result.prompt_tokens,
        "model": cfg.model,
        "backend": cfg.backend,
        "max_tokens": cfg.max_tokens,
        "request_key": planned.request_key,
        "error": result.error,
        "created_at": now_us(),
    }


def _table_builder(prompts: pl.DataFrame) -> Callable[[list[dict]], pa.Table]:
    """Turns journal rows into a trace table: trace columns, then the prompt table's extra columns."""
    extra = prompts.drop(PROMPT_ID, PROBLEM, ANSWER)
    extra_table = extra.to_arrow()
    schema = pa.schema(list(TRACE_SCHEMA) + list(extra_table.schema))
    position = {prompt_id: i for i, prompt_id in enumerate(prompts[PROMPT_ID].to_list())}

    def build(rows: list[dict]) -> pa.Table:
        table = trace_table(rows)
        if extra.width:
            # A journal left by a run over other input may name prompts not in it: their extras are null.
            picked = extra_table.take(pa.array([position.get(row[PROMPT_ID]) for row in rows], pa.int64()))
            for name in picked.column_names:
                table = table.append_column(schema.field(name), picked.column(name))
        return table

    return build


def _summarize(out: Path, keys: list[str], generated: int, started: datetime) -> GenerateSummary:
    state = read_state(out).filter(pl.col("id").is_in(keys))
    counts = state["finish_reason"].value_counts()
    by_reason = dict(zip(counts["finish_reason"].to_list(), counts["count"].to_list()))
    failures = Counter(failure_reason(error) for error in state.filter(pl.col("finish_reason") == "error")["error"].to_list())
    return GenerateSummary(
        output=str(out),
        rows=len(keys),
        present=state.height,
        generated=generated,
        truncated=by_reason.get("length", 0),
        failed=by_reason.get("error", 0),
        permanent=sum(count for reason, count in failures.items() if is_permanent(reason)),
        failure_reasons=dict(failures.most_common()),
        completion_tokens=int(state["completion_tokens"].sum() or 0),
        wall_seconds=(datetime.now(timezone.utc) - started).total_seconds(),
    )


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["polars", "pyarrow", "aiohttp"] if backend == "openai" else ["torch", "transformers", "polars", "pyarrow"]
    if backend == "vllm":
        names.append("vllm")
    found = {"r1distill": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _write_manifest(cfg: GenerateConfig, summary: GenerateSummary, started: datetime, prompts: int) -> None:
    index, count = cfg.shard_parts()
    settings = asdict(cfg)
    settings["base_urls"] = [redact_url(url) for url in cfg.base_urls]
    settings.pop("command")
    manifest = {
        "stage": "generate",
        "created_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "command": [redact_text(arg) for arg in cfg.command],
        "settings": settings,
        "shard": {"index": index, "count": count},
        "versions": _versions(cfg.backend),
        "counts": {"prompts": prompts} | {k: v for k, v in asdict(summary).items() if k != "output"},
    }
    name = "manifest.json" if count == 1 else f"manifest-{index:05d}-of-{count:05d}.json"
    path = Path(cfg.output) / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def rank_shards(shard: str, parts: int) -> list[str]:
    """The --shard of each data-parallel rank: together exactly the prompts of `shard`.

    hash % (N*P) == i + N*r implies hash % N == i, so rank r of shard i/N takes part i + N*r of N*P.

    >>> rank_shards("1/3", 2)
    ['1/6', '4/6']
    """
    index, _, count = shard.partition("/")
    index, count = int(index), int(count)
    return [f"{index + count * rank}/{count * parts}" for rank in range(parts)]


def _data_parallel(cfg: GenerateConfig, started: datetime) -> GenerateSummary:
    """One vLLM process per GPU group, each on its own sub-shard of this process's shard."""
    import multiprocessing

    import torch

    index, count = cfg.shard_parts()
    parts = cfg.data_parallel_size
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    needed = parts * cfg.tensor_parallel_size
    if len(gpus) < needed:
        raise UsageError(f"--data-parallel-size {parts} x --tensor-parallel-size {cfg.tensor_parallel_size} needs {needed} GPUs, found {len(gpus)}")
    context = multiprocessing.get_context("spawn")
    workers = []
    for rank, shard in enumerate(rank_shards(cfg.shard, parts)):
        part = replace(cfg, shard=shard, data_parallel_size=1)
        group = ",".join(gpus[rank * cfg.tensor_parallel_size : (rank + 1) * cfg.tensor_parallel_size])
        worker = context.Process(target=_data_parallel_worker, args=(part, group))
        worker.start()
        workers.append(worker)
    for worker in workers:
        worker.join()
    failed = [rank for rank, worker in enumerate(workers) if worker.exitcode != 0]
    if failed:
        raise RuntimeError(f"data-parallel ranks {failed} failed; rerun the same command to resume")
    prompts = _my_prompts(cfg)
    keys = [trace_id(pid, s) for pid in prompts[PROMPT_ID].to_list() for s in range(cfg.num_samples)]
    summary = _summarize(Path(cfg.output), keys, 0, started)
    _write_manifest(cfg, summary, started, prompts.height)
    return summary


def _data_parallel_worker(cfg: GenerateConfig, gpus: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    generate(cfg)


def print_summary(summary: GenerateSummary) -> None:
    share = summary.truncated / summary.present if summary.present else 0.0
    summary_table(
        f"generate → {summary.output}",
        [
            ("rows", f"{summary.present:,} / {summary.rows:,}"),
            ("generated this run", f"{summary.generated:,}"),
            ("completion tokens", f"{summary.completion_tokens:,}"),
            ("truncated (length)", f"{summary.truncated:,} ({share:.1%})"),
            ("failed", f"{summary.failed:,}"),
            ("wall time", f"{summary.wall_seconds:,.1f} s"),
        ],
    )


def failure_report(summary: GenerateSummary, top: int = 3) -> str:
    """One line on the failed rows: the most common reasons, what to check for each, and how to retry.

    >>> s = GenerateSummary("out", 4, 4, 4, 0, failed=3, permanent=2, failure_reasons={"http_401": 2, "timeout": 1},
    ...                     completion_tokens=0, wall_seconds=0.0)
    >>> print(failure_report(s))
    3 requests failed: 2 http_401 (check the API key in the variable that --api-key-env names), 1 timeout (the server is slow: raise --request-timeout or lower --concurrency). Rerun the same command to retry them; the 2 permanent failures (4xx, prompt_too_long) only with --retry-failed.
    """
    parts = []
    for reason, count in list(summary.failure_reasons.items())[:top]:
        hint = failure_hint(reason)
        parts.append(f"{count:,} {reason}" + (f" ({hint})" if hint else ""))
    if len(summary.failure_reasons) > top:
        parts.append(f"{sum(list(summary.failure_reasons.values())[top:]):,} other")
    line = f"{summary.failed:,} requests failed: {', '.join(parts)}."
    if summary.permanent == summary.failed:
        return f"{line} These are permanent; fix the cause, then rerun with --retry-failed."
    retry = " Rerun the same command to retry them"
    if summary.permanent:
        retry += f"; the {summary.permanent:,} permanent failures (4xx, prompt_too_long) only with --retry-failed"
    return f"{line}{retry}."
