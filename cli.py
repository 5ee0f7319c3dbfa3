"""The `r1distill` command: thin Typer commands that parse options and call the stage functions.

A `UsageError` (bad input or options) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from r1distill import __version__
from r1distill.errors import UsageError

app = typer.Typer(
    help="R1-style reasoning distillation: teacher traces, rule rewards, rejection sampling, SFT and GRPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

INPUT_HELP = "Prompt table: .jsonl/.json/.parquet/.csv, a folder of Parquet shards, a datasets save_to_disk folder, or a Hub dataset id."


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"r1distill {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from r1distill.console import setup_logging

    setup_logging(verbose)


@app.command()
def generate(
    input: Annotated[str, typer.Argument(help=INPUT_HELP, metavar="INPUT", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (Parquet shards + manifest.json). Rerunning the same command resumes into it.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Teacher: 'smollm2-135m' (embedded, offline), a Hub id or local folder, or the model name a server serves.")] = "smollm2-135m",
    backend: Annotated[str, typer.Option(help="transformers (local CPU/GPU), openai (any OpenAI-compatible server: vllm serve, SGLang, llama.cpp, DeepSeek API) or vllm (offline on local GPUs).")] = "transformers",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Completions per prompt (rejection sampling picks among them later).")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per completion. Rerunning with a larger value redoes only the truncated rows.")] = 4096,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; DeepSeek recommends 0.6 for R1. 0 is greedy.")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Base seed; each (prompt, sample) derives its own.")] = 0,
    template: Annotated[str, typer.Option(help="chat: the model's chat template with a \\boxed{} answer request. r1-zero: the R1-Zero paper prompt as raw text.")] = "chat",
    system: Annotated[Optional[str], typer.Option(help="System prompt (chat template).")] = None,
    prompt_template: Annotated[Optional[str], typer.Option(help="User turn with {problem} in it, replacing the default step-by-step \\boxed{} request.")] = None,
    base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="OpenAI-compatible base URL ending in /v1; repeat it to spread the load over several servers. A user:password@ or a key in the query is sent, and redacted in logs and the manifest.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key (read at run time, never printed or written).")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once (openai backend).")] = 64,
    shard: Annotated[str, typer.Option(help="Generate only part i/N of the prompts (0-based), so N machines can share one --output.")] = "0/1",
    problem_column: Annotated[str, typer.Option(help="Input column with the problem text.")] = "problem",
    answer_column: Annotated[Optional[str], typer.Option(help="Input column with the gold answer [default: 'answer' if present].")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Input column with a unique prompt id [default: 'id' if present, else a hash of the problem].")] = None,
    split: Annotated[str, typer.Option(help="Split of a Hub dataset or save_to_disk folder.")] = "train",
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch (transformers) or scheduling chunk (vllm).")] = 8,
    max_retries: Annotated[int, typer.Option(help="Retries per request on 429/5xx/timeouts/dropped connections before it is recorded as failed.")] = 8,
    request_timeout: Annotated[float, typer.Option(help="Seconds one request may take before it is retried.")] = 1800.0,
    retry_delay: Annotated[float, typer.Option(help="First retry waits up to this many seconds, doubling each time (full jitter); a Retry-After header wins.")] = 1.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also retry rows that failed permanently in an earlier run (a 4xx refusal such as 400 or 401, prompt_too_long); other failed rows are always retried.")] = False,
    rows_per_shard: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 1000,
    device: Annotated[Optional[str], typer.Option(help="Torch device for the transformers backend [default: cuda if available, else cpu].")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs per model replica (vllm).")] = 1,
    data_parallel_size: Annotated[int, typer.Option(help="Model replicas, one process per GPU group, each on its own part of the prompts (vllm).")] = 1,
) -> None:
    """Generate long chain-of-thought traces from a teacher, resumably.

    Every finished completion is journaled at once, so a crash or kill loses only the requests in
    flight; rerunning the same command generates only what is missing. Exit code 1 means some
    requests failed after their retries: they are in OUT with finish_reason 'error' and a reason, and
    a rerun retries them (those the server refused as they are, only with --retry-failed).
    """
    from r1distill.generate import GenerateConfig
    from r1distill.generate import generate as run_generate
    from r1distill.generate.run import failure_report, print_summary

    cfg = GenerateConfig(
        input=input,
        output=str(output),
        model=model,
        backend=backend,
        num_samples=num_samples,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        template=template,
        system=system,
        prompt_template=prompt_template,
        base_urls=list(base_url or []),
        api_key_env=api_key_env,
        concurrency=concurrency,
        shard=shard,
        problem_column=problem_column,
        answer_column=answer_column,
        id_column=id_column,
        split=split,
        batch_size=batch_size,
        max_retries=max_retries,
        request_timeout=request_timeout,
        retry_delay=retry_delay,
        retry_failed=retry_failed,
        rows_per_shard=rows_per_shard,
        device=device,
        tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size,
        command=["r1distill", *sys.argv[1:]],
    )
    try:
        summary = run_generate(cfg)
    except UsageError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        typer.echo("interrupted: finished rows are saved; rerun the same command to resume", err=True)
        raise typer.Exit(130)
    print_summary(summary)
    if summary.failed:
        typer.echo(failure_report(summary), err=True)
        raise typer.Exit(1)


@app.command(name="filter")
def filter_(
    input: Annotated[str, typer.Argument(help="Trace table: a `r1distill generate` output folder, or any dataset with problem and completion columns.", metavar="INPUT", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="New output folder, laid out as a Hugging Face dataset repository (data/, scored/, stats.json, README.md).", show_default=False)],
    check: Annotated[Optional[list[str]], typer.Option("--check", help="A check every kept row must pass; repeat it. accuracy, format, language, length, truncated, repetition [default: accuracy format language truncated repetition].")] = None,
    accuracy: Annotated[str, typer.Option(help="Answer check: math (Math-Verify against the gold answer), choice (multiple-choice letters) or exact (string).")] = "math",
    accuracy_column: Annotated[Optional[str], typer.Option(help="Column naming the answer check per row (math, choice or exact).")] = None,
    lenient_format: Annotated[bool, typer.Option(help="Accept completions of templates that pre-fill <think> (no opening tag).")] = False,
    language: Annotated[str, typer.Option(help="Target language of the reasoning (language check): en, zh, ...")] = "en",
    min_language_share: Annotated[float, typer.Option(help="Least share of the reasoning's words in the target language.")] = 0.95,
    min_tokens: Annotated[Optional[int], typer.Option(help="Fewest completion tokens (length check).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Most completion tokens (length check).")] = None,
    max_repetition: Annotated[float, typer.Option(help="Largest 4-gram repetition ratio (repetition check).")] = 0.5,
    keep: Annotated[str, typer.Option(help="Rejection sampling among a prompt's passing samples: all, first:K or shortest:K.")] = "all",
    min_pass_rate: Annotated[float, typer.Option(help="Drop prompts whose pass rate (correct / samples) is lower: too hard.")] = 0.0,
    max_pass_rate: Annotated[float, typer.Option(help="Drop prompts whose pass rate is higher: too easy (RL prompt sets use e.g. 0.8).")] = 1.0,
    dedup: Annotated[str, typer.Option(help="Problem dedup: none, exact (normalised text) or near (MinHash LSH).")] = "exact",
    dedup_threshold: Annotated[float, typer.Option(help="Jaccard similarity above which problems are near duplicates.")] = 0.8,
    decontaminate: Annotated[Optional[list[str]], typer.Option("--decontaminate", help="Benchmark file or Hub dataset whose problems must not leak in; repeat it.")] = None,
    ngram: Annotated[int, typer.Option(help="Word n-gram length for decontamination.")] = 8,
    non_reasoning: Annotated[Optional[str], typer.Option(help="Conversations without thinking to mix in (a messages column, or problem/prompt and response columns).")] = None,
    non_reasoning_ratio: Annotated[Optional[float], typer.Option(help="Non-reasoning rows per kept reasoning row (R1: about 0.33).")] = None,
    non_reasoning_count: Annotated[Optional[int], typer.Option(help="Non-reasoning rows to add, instead of a ratio.")] = None,
    no_think: Annotated[str, typer.Option(help="Render non-reasoning answers with no think block (none) or an empty one (empty).")] = "none",
    timeout: Annotated[float, typer.Option(help="Seconds Math-Verify may spend on one answer; then the row's verdict is 'timeout'.")] = 5.0,
    workers: Annotated[Optional[int], typer.Option(help="Math-Verify worker processes [default: the usable cores].")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per streaming batch (bounds memory).")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the non-reasoning sample.")] = 0,
) -> None:
    """Score traces with rule rewards, keep the good ones, and write an SFT-ready dataset.

    Every input row is judged by each check (the same rewards `r1distill rl` optimises); rows that
    fail a check, prompts that are duplicates, contaminated or outside the pass-rate band, and samples
    beyond --keep are dropped, each counted under its first reason in stats.json and the card.
    """
    from r1distill.filter.run import FilterConfig, filter_traces, print_summary

    cfg = FilterConfig(
        input=input,
        output=str(output),
        **({"checks": list(check)} if check else {}),
        accuracy=accuracy,
        accuracy_column=accuracy_column,
        lenient_format=lenient_format,
        language=language,
        min_language_share=min_language_share,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        max_repetition=max_repetition,
        keep=keep,
        min_pass_rate=min_pass_rate,
        max_pass_rate=max_pass_rate,
        dedup=dedup,
        dedup_threshold=dedup_threshold,
        decontaminate=list(decontaminate or []),
        ngram=ngram,
        non_reasoning=non_reasoning,
        non_reasoning_ratio=non_reasoning_ratio,
        non_reasoning_count=non_reasoning_count,
        no_think=no_think,
        timeout=timeout,
        workers=workers,
        batch_rows=batch_rows,
        seed=seed,
        command=["r1distill", *sys.argv[1:]],
    )
    try:
        summary = filter_traces(cfg)
    except UsageError as err:
        _fail(str(err))
    print_summary(summary)


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="A `r1distill filter` or `generate` output folder.", metavar="DIR", show_default=False)],
    repo_id: Annotated[str, typer.Option(help="Dataset repository on the Hub, like 'user/name'.", show_default=False)],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
) -> None:
    """Upload an output folder to the Hugging Face Hub as a dataset repository.

    The token comes from HF_TOKEN or `hf auth login` and is never printed.
    """
    from r1distill.hub import push as push_folder

    try:
        url = push_folder(folder, repo_id, private)
    except UsageError as err:
        _fail(str(err))
    typer.echo(url)


if __name__ == "__main__":
    app()
