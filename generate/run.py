"""r1distill generate: a teacher writes long chain-of-thought traces for a prompt table.

Generation is the expensive stage (100k prompts x 4 samples x 16k tokens is GPU-days), so it is built
to never lose or repeat finished work:

1. Check every option and the input up front; a problem is one `UsageError` and nothing is written.
2. Plan one request per (prompt, sample). Its `request_key` hashes everything besides the sample index
   (which is in the row id) and max_tokens that changes the output: model, prompt id, messages,
   template, temperature, top_p and seed.
3. Compare with what OUT already holds. OUT is a single-configuration dataset: a run whose settings
   that shape rows (ROW_SETTINGS) differ from those in OUT's manifests is refused before anything is
   written. A row is done when its key matches and it either stopped, or was cut off at a budget at
   least as large as this run's. So a rerun after a crash generates only what is missing, a rerun
   with a larger --max-tokens redoes only the truncated rows, and failed rows are retried, except
   permanent failures (a 4xx refusal, a prompt too long) without --retry-failed.
4. Generate the rest with the chosen backend, journaling each result as it arrives (see store.py),
   behind a live progress bar. A server backend first sends one preflight request and a local model's
   config is read, before OUT is touched, so a wrong URL, model or key is one line and leaves nothing.
5. Drop superseded rows, record the run in the manifest (settings, command, versions, counts; every
   run that wrote to OUT keeps its entry) and print the summary, which names the most common failure
   reasons and what to check for each.

`--shard i/N` keeps the prompts whose stable hash falls in part i of N, so N machines can share one OUT.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from r1distill.console import RowProgress, summary_table
from r1distill.data import load_prompts
from r1distill.errors import UsageError
from r1distill.backends import BACKENDS, Backend, Request, Result, Sampling, failure_hint, failure_reason, is_permanent, make_backend
from r1distill.generate.manifest import check_settings, key_settings, request_key, write_manifest
from r1distill.generate.prompts import RAW_TEMPLATES, TEMPLATES, build_messages
from r1distill.generate.store import TraceStore, has_superseded_rows, now_us, read_state
from r1distill.redact import redact_text
from r1distill.schema import (
    ANSWER,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    PROBLEM,
    PROMPT_ID,
    TRACE_SCHEMA,
    canonical_completion,
    split_reasoning,
    stable_id,
    trace_id,
    trace_table,
)

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """Settings of one `r1distill generate` run."""

    input: str
    """Prompt table: .jsonl/.json/.parquet/.csv, a folder of Parquet shards, a datasets save_to_disk folder, or a Hub dataset id."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder (Parquet shards + manifest.json); rerunning the same command resumes into it."""
    model: str = field(default="smollm2-135m", metadata={"flags": ("--model", "-m")})
    """Teacher: 'smollm2-135m' (embedded, offline), a Hub id or local folder, or the model name a server serves."""
    backend: str = "transformers"
    """transformers (local CPU/GPU), openai (any OpenAI-compatible server: vllm serve, SGLang, llama.cpp, DeepSeek's API) or vllm (offline on local GPUs)."""
    num_samples: int = field(default=1, metadata={"flags": ("--num-samples", "-n")})
    """Completions per prompt (rejection sampling picks among them later)."""
    max_tokens: int = 4096
    """Most tokens per completion; rerunning with a larger value redoes only the truncated rows."""
    temperature: float = 0.6
    """Sampling temperature (DeepSeek recommends 0.5-0.7 for R1); 0 is greedy."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    seed: int = 0
    """Base seed; each (prompt, sample) derives its own."""
    template: str = "chat"
    """chat: the model's chat template with a \\boxed{} answer request; r1-zero: the R1-Zero paper prompt as raw text; raw: the problem column sent as it is (prompts rendered elsewhere)."""
    system: str | None = None
    """System prompt (chat template)."""
    prompt_template: str | None = None
    """User turn with {problem} in it, replacing the default step-by-step \\boxed{} request."""
    base_urls: list[str] = field(default_factory=list, metadata={"flags": ("--base-url",)})
    """OpenAI-compatible base URL ending in /v1; repeat it to spread the load over several servers. A user:password@ in one is sent as basic auth."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (read at run time, never printed or written)."""
    concurrency: int = 64
    """Requests in flight at once (openai backend)."""
    shard: str = "0/1"
    """Generate only part i/N of the prompts (0-based), so N machines can share one --output."""
    problem_column: str = PROBLEM
    """Input column with the problem text."""
    answer_column: str | None = None
    """Input column with the gold answer [default: 'answer' if present]."""
    id_column: str | None = None
    """Input column with a unique prompt id [default: 'id' if present, else a hash of the problem]."""
    split: str = "train"
    """Split of a Hub dataset or save_to_disk folder."""
    batch_size: int = 8
    """Prompts per forward batch (transformers) or per scheduling chunk (vllm)."""
    max_retries: int = 8
    """Retries per request on 429/5xx/timeouts/dropped connections before it is recorded as failed (openai)."""
    request_timeout: float = 1800.0
    """Seconds one request may take before it is retried (openai)."""
    retry_delay: float = 1.0
    """First retry waits up to this many seconds, doubling each time (full jitter); a Retry-After header wins."""
    retry_failed: bool = False
    """Also retry rows that failed permanently in an earlier run (a 4xx refusal such as 400 or 401, prompt_too_long)."""
    rows_per_shard: int = 1000
    """Rows per Parquet shard."""
    seconds_per_shard: float = 60.0
    """A shard is also written after this many seconds, so a long run shows its traces early."""
    device: str | None = None
    """Torch device for the transformers backend [default: cuda if available, else cpu]."""
    tensor_parallel_size: int = 1
    """GPUs per model replica (vllm)."""
    max_model_len: int | None = None
    """Context length of prompt plus output (vllm) [default: the model's own]."""
    data_parallel_size: int = 1
    """Model replicas, one process per GPU group, each on its own part of the prompts (vllm)."""
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
        if self.device is not None:
            problems += _device_problems(self.device, self.backend)
        if self.max_model_len is not None and (self.backend != "vllm" or self.max_model_len < 2):
            problems.append("--max-model-len only applies to --backend vllm and must be at least 2")
        if self.data_parallel_size > 1 and self.backend != "vllm":
            problems.append("--data-parallel-size only applies to --backend vllm (use --shard for the others)")
        if Path(self.output).exists() and not Path(self.output).is_dir():
            problems.append(f"-o {self.output}: exists and is not a folder")
        if problems:
            raise UsageError("; ".join(problems))


def _device_problems(device: str, backend: str) -> list[str]:
    if backend != "transformers":
        return [f"--device only applies to --backend transformers, not {backend}"]
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        return [f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"]
    if kind == "cuda" and not torch.cuda.is_available():
        return [f"--device {device}: no CUDA GPU is visible here; use --device cpu"]
    if kind == "mps" and not torch.backends.mps.is_available():
        return [f"--device {device}: MPS is not available here; use --device cpu"]
    return []


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
    rejected: int
    """Journal rows that could not be stored, moved to OUT/.journal/rejected-*.jsonl (generated again next run)."""
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
    check_settings(cfg, Path(cfg.output))
    if cfg.backend == "vllm" and cfg.data_parallel_size > 1:
        return _data_parallel(cfg, started)
    with _fewer_collections():
        prompts = _my_prompts(cfg)
        plan = _plan(prompts, cfg)
    api_key = os.environ.get(cfg.api_key_env) if cfg.backend == "openai" else None
    backend = None
    if cfg.backend == "openai":
        # Before OUT is touched: a wrong URL, model or key is one line, not a folder of failed rows.
        backend = _backend(cfg, api_key)
        backend.preflight(raw=cfg.template in RAW_TEMPLATES)
    index, count = cfg.shard_parts()
    out = Path(cfg.output)
    if cfg.backend == "transformers":
        from r1distill.backends.hf import check_model

        check_model(cfg.model)  # a typo in --model is one line, before OUT is touched
    generated, prefilled_think = 0, None
    with TraceStore(out, f"{index:05d}-of-{count:05d}", _table_builder(prompts), cfg.rows_per_shard, cfg.seconds_per_shard) as store:
        todo, redo = _pending(plan, read_state(out), cfg.max_tokens, cfg.retry_failed)
        write_manifest(cfg, started, prompts.height)
        log.info("%d prompts x %d samples: %d rows to generate (%d already done)", prompts.height, cfg.num_samples, len(todo), len(plan) - len(todo))
        if todo:
            backend = backend or _backend(cfg, api_key)
            try:
                generated, prefilled_think = _drive(backend, todo, store, cfg, total=len(plan))
            finally:
                backend.close()
        store.flush()
        # Also after a run that redid nothing: an earlier one may have died between its redo and its compaction.
        if redo or has_superseded_rows(out):
            store.compact()
        # Under the lock, so a rerun cannot record its start in between and lose this entry.
        summary = _summarize(out, [p.request.key for p in plan], generated, store.rejected, started)
        write_manifest(cfg, started, prompts.height, summary, prefilled_think)
    return summary


def _my_prompts(cfg: GenerateConfig) -> pl.DataFrame:
    prompts = load_prompts(cfg.input, cfg.problem_column, cfg.answer_column, cfg.id_column, cfg.split)
    index, count = cfg.shard_parts()
    if count > 1:
        part = prompts[PROMPT_ID].map_elements(lambda pid: int(stable_id(pid), 16) % count, return_dtype=pl.Int64)
        prompts = prompts.filter(part == index)
    return prompts


def _plan(prompts: pl.DataFrame, cfg: GenerateConfig) -> list[_Planned]:
    settings = key_settings(cfg)
    raw = cfg.template in RAW_TEMPLATES
    plan = []
    for prompt_id, problem, answer in zip(prompts[PROMPT_ID].to_list(), prompts[PROBLEM].to_list(), prompts[ANSWER].to_list()):
        messages = build_messages(problem, cfg.template, cfg.system, cfg.prompt_template)
        key = request_key(settings, prompt_id, messages)
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
        if finish == FINISH_STOP or (finish == FINISH_LENGTH and budget >= max_tokens):
            continue
        if finish == "error" and not retry_failed and is_permanent(failure_reason(error)):
            kept_failures += 1
            continue
        todo.append(planned)
        redo += 1
    if kept_failures:
        log.info("%d rows failed permanently in an earlier run and are not retried (add --retry-failed to retry them)", kept_failures)
    return todo, redo


def _backend(cfg: GenerateConfig, api_key: str | None) -> Backend:
    """The backend of this run, with the options its kind takes."""
    sampling = Sampling(cfg.max_tokens, cfg.temperature, cfg.top_p)
    if cfg.backend == "openai":
        options = {
            "base_urls": cfg.base_urls, "api_key": api_key, "concurrency": cfg.concurrency, "max_retries": cfg.max_retries,
            "request_timeout": cfg.request_timeout, "retry_delay": cfg.retry_delay,
        }
    elif cfg.backend == "vllm":
        options = {
            "tensor_parallel_size": cfg.tensor_parallel_size, "max_model_len": cfg.max_model_len,
            "batch_size": max(cfg.batch_size, 256), "seed": cfg.seed,
        }
    else:
        options = {"batch_size": cfg.batch_size, "device": cfg.device, "seed": cfg.seed}
    return make_backend(cfg.backend, cfg.model, sampling, **options)


def _drive(backend: Backend, todo: list[_Planned], store: TraceStore, cfg: GenerateConfig, total: int) -> tuple[int, bool | None]:
    """Generate `todo`; returns the rows generated and whether the template pre-filled <think> (None: no result said)."""
    by_key = {planned.request.key: planned for planned in todo}
    generated = 0
    prefilled_think = None

    with RowProgress(f"generate {cfg.model}", total=total, done=total - len(todo)) as progress:

        def emit(result: Result) -> None:
            nonlocal generated, prefilled_think
            row = store.append(_row(by_key[result.key], result, cfg))
            generated += 1
            if result.finish_reason != FINISH_ERROR:
                prefilled_think = bool(prefilled_think) or result.prefilled_think
            # The row as journaled: a server's token count may have been text.
            progress.advance(row["completion_tokens"] or 0, row["finish_reason"] == FINISH_ERROR)

        requests = [planned.request for planned in todo]
        with _fewer_collections(), _interrupt_at_once():
            asyncio.run(backend.run(requests, emit))
    return generated, prefilled_think


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interrupt_at_once():
    """Ctrl-C raises KeyboardInterrupt at the first press, wherever the main thread is.

    asyncio.run would only cancel its task at the first press, which waits for a model batch running in
    the main thread to finish, and raise at the second; a handler of our own keeps it from doing that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
    completion = canonical_completion(result.text, reasoning=result.reasoning, prefilled_think=result.prefilled_think)
    reasoning, response = split_reasoning(completion)
    return {
        "id": planned.request.key,
        PROMPT_ID: planned.prompt_id,
        "sample": planned.sample,
        PROBLEM: planned.problem,
        ANSWER: planned.answer,
        "prompt": planned.request.messages,
        "completion": completion,
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


def _summarize(out: Path, keys: list[str], generated: int, rejected: int, started: datetime) -> GenerateSummary:
    state = read_state(out).filter(pl.col("id").is_in(keys))
    counts = state["finish_reason"].value_counts()
    by_reason = dict(zip(counts["finish_reason"].to_list(), counts["count"].to_list()))
    failures = Counter(failure_reason(error) for error in state.filter(pl.col("finish_reason") == "error")["error"].to_list())
    return GenerateSummary(
        output=str(out),
        rows=len(keys),
        present=state.height,
        generated=generated,
        truncated=by_reason.get(FINISH_LENGTH, 0),
        failed=by_reason.get(FINISH_ERROR, 0),
        permanent=sum(count for reason, count in failures.items() if is_permanent(reason)),
        failure_reasons=dict(failures.most_common()),
        rejected=rejected,
        completion_tokens=int(state["completion_tokens"].sum() or 0),
        wall_seconds=(datetime.now(timezone.utc) - started).total_seconds(),
    )


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
    summary = _summarize(Path(cfg.output), keys, 0, 0, started)
    write_manifest(cfg, started, prompts.height, summary)
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
    ...                     rejected=0, completion_tokens=0, wall_seconds=0.0)
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
