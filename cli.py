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
    base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="OpenAI-compatible base URL ending in /v1; repeat it to spread the load over several servers.")] = None,
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
    rows_per_shard: Annotated[int, typer.Option(help="Rows per Parquet shard.")] = 1000,
    device: Annotated[Optional[str], typer.Option(help="Torch device for the transformers backend [default: cuda if available, else cpu].")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs per model replica (vllm).")] = 1,
    data_parallel_size: Annotated[int, typer.Option(help="Model replicas, one process per GPU group, each on its own part of the prompts (vllm).")] = 1,
) -> None:
    """Generate long chain-of-thought traces from a teacher, resumably.

    Every finished completion is journaled at once, so a crash or kill loses only the requests in
    flight; rerunning the same command generates only what is missing. Exit code 1 means some
    requests failed after their retries (they are in OUT with finish_reason 'error'; rerun to retry).
    """
    from r1distill.generate import GenerateConfig
    from r1distill.generate import generate as run_generate
    from r1distill.generate.run import print_summary

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
        typer.echo(f"{summary.failed} requests failed after retries; rerun the same command to retry them", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
