"""Settings of `r1distill generate`: one field per option (the CLI and `r1distill run` read them), and
`check`, which finds every problem with them before anything is read or written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import context, requirements
from r1distill.cluster import ClusterSettings
from r1distill.backends import BACKENDS
from r1distill.errors import UsageError, missing_training
from r1distill.prompts import RAW_TEMPLATES, TEMPLATES
from r1distill.redact import api_key_env_problem, redact_text
from r1distill.schema import PROBLEM

PREFILLED_THINK = {"auto": None, "yes": True, "no": False}
"""--prefilled-think: learn whether a server's chat template opens <think> itself, or say so."""


@dataclass(kw_only=True)
class GenerationSettings(ClusterSettings):
    """How completions are made: backend, sampling, prompt, servers, devices and where the backends run
    (`ClusterSettings`). generate's settings, and eval's, which hands them to generate as they are."""

    backend: str = "transformers"
    """transformers (local CPU/GPU), openai (any OpenAI-compatible server: vllm serve, SGLang, llama.cpp, DeepSeek's API) or vllm (offline on local GPUs)."""
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
    chat_template_kwargs: list[str] = field(default_factory=list)
    """KEY=VALUE for the chat template (true/false/numbers read as such), applied locally and sent to servers as chat_template_kwargs: enable_thinking=false makes a hybrid teacher (Qwen3-style templates) answer without thinking, the non-reasoning half `filter --non-reasoning` mixes in; repeat it."""
    prefilled_think: str = "auto"
    """Whether the server's chat template opens <think> itself (R1-Distill models without a reasoning parser), so completions get the tag back (openai): auto learns it once per run (a local model folder's tokenizer, else vLLM's /tokenize); yes or no say so."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key, named like one (ending in _KEY or _TOKEN) and not another service's credential such as HF_TOKEN or AWS_*; read at run time, sent to every server, never printed or written."""
    concurrency: int = 64
    """Requests in flight at once (openai backend)."""
    batch_size: int = 8
    """Prompts per forward batch (transformers) or per scheduling chunk (vllm)."""
    max_retries: int = 8
    """Retries per request on 429/5xx/timeouts/dropped connections before it is recorded as failed (openai)."""
    max_failed: float = 0.001
    """Share of the rows that may be refused for good (a 4xx such as 400, prompt_too_long) with the run still finished: they are counted and left out; beyond it, or after any other failure (5xx, timeout, 429), the run fails and a rerun retries."""
    request_timeout: float = 1800.0
    """Seconds one request may take before it is retried (openai)."""
    retry_delay: float = 1.0
    """First retry waits up to this many seconds, doubling each time (full jitter); a Retry-After header wins."""
    device: str | None = None
    """Torch device for the transformers backend [default: cuda if available, else cpu]."""
    tensor_parallel_size: int = 1
    """GPUs per model replica (vllm)."""
    max_model_len: int | None = None
    """Context length of prompt plus output (vllm) [default: the model's own]; past the model's positions only with VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."""
    tokenizer: str | None = None
    """Tokenizer (Hub id or folder) whose chat template renders budget-forcing prompts and that counts thinking tokens [default: the model's; --backend openai needs it for --thinking-budget with the chat template]."""

    def context_problem(self, model: str, tokens: int, option: str) -> str | None:
        """Why `tokens` of completion (plus the prompt) do not fit `model` on this backend, or None (see
        context.py). A server's model is the server's to bound, so openai is not checked."""
        if self.backend == "openai":
            return None
        return context.generation_problem(model, tokens, option, vllm=self.backend == "vllm", max_model_len=self.max_model_len, length_option="--max-model-len")

    def template_kwargs(self) -> dict:
        """--chat-template-kwargs as the keyword arguments the chat template gets (ValueError names a bad one)."""
        return template_kwargs(self.chat_template_kwargs)


@dataclass
class GenerateConfig(GenerationSettings):
    """Settings of one `r1distill generate` run (with the `GenerationSettings`)."""

    input: str
    """Prompt table: .jsonl/.json/.parquet/.csv, a folder of Parquet shards, a datasets save_to_disk folder, or a Hub dataset id."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output folder (Parquet shards + manifest.json); rerunning the same command resumes into it."""
    model: str = field(default="smollm2-135m", metadata={"flags": ("--model", "-m")})
    """Teacher: 'smollm2-135m' (embedded, offline), a Hub id or local folder, or the model name a server serves."""
    num_samples: int = field(default=1, metadata={"flags": ("--num-samples", "-n")})
    """Completions per prompt (rejection sampling picks among them later)."""
    max_tokens: int = 4096
    """Most tokens per completion (with --thinking-budget: of the answer after the thinking); rerunning with a larger value redoes only the truncated rows."""
    thinking_budget: int | None = None
    """Budget forcing (s1): the chat template's prompt ends in an opened <think>, the thinking stops at this many tokens (or at the model's own </think>), the tag and "Final answer:" are forced where it was cut, and the answer follows; each row records whether it was forced."""
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
    retry_failed: bool = False
    """Also retry rows that failed permanently in an earlier run (a 4xx refusal such as 400 or 401, prompt_too_long)."""
    rows_per_shard: int = 1000
    """Rows per Parquet shard."""
    seconds_per_shard: float = 60.0
    """A shard is also written after this many seconds, so a long run shows its traces early."""
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
        if self.prefilled_think not in PREFILLED_THINK:
            problems.append(f"--prefilled-think must be one of {', '.join(PREFILLED_THINK)}, got {self.prefilled_think!r}")
        elif self.prefilled_think != "auto" and self.backend != "openai":
            problems.append(f"--prefilled-think only applies to --backend openai (the {self.backend} backend reads the model's template)")
        try:
            kwargs = self.template_kwargs()
        except ValueError as err:
            problems.append(str(err))
        else:
            if kwargs and self.template in RAW_TEMPLATES:
                problems.append(f"--chat-template-kwargs applies to the chat template; --template {self.template} sends the prompt as raw text")
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
        if not 0 <= self.max_failed <= 1:
            problems.append(f"--max-failed is a share of the rows, from 0 to 1, got {self.max_failed}")
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
            problem = api_key_env_problem(self.api_key_env)
            if problem:
                problems.append(problem)
        elif self.base_urls:
            problems.append(f"--base-url only applies to --backend openai, not {self.backend}")
        problems += requirements.missing(self)
        missing = missing_training("--backend transformers (the default)", ("torch", "transformers")) if self.backend == "transformers" else None
        if missing:
            problems.append(missing)
        elif self.device is not None:
            problems += _device_problems(self.device, self.backend)
        if self.max_model_len is not None and (self.backend != "vllm" or self.max_model_len < 2):
            problems.append("--max-model-len only applies to --backend vllm and must be at least 2")
        elif self.max_tokens >= 1 and (problem := self.context_problem(self.model, self.max_tokens, "--max-tokens")):
            problems.append(problem)
        problems += self._budget_problems()
        problems += self.cluster_problems()
        if self.executor == "ray" and self.data_parallel_size > 1:
            problems.append("--data-parallel-size runs replicas on this node; with --executor ray use --replicas")
        if self.data_parallel_size > 1 and self.backend != "vllm":
            problems.append("--data-parallel-size only applies to --backend vllm (use --shard for the others)")
        if Path(self.output).exists() and not Path(self.output).is_dir():
            problems.append(f"-o {self.output}: exists and is not a folder")
        if problems:
            raise UsageError("; ".join(problems))


    def _budget_problems(self) -> list[str]:
        if self.thinking_budget is None:
            return []
        if self.thinking_budget < 1:
            return [f"--thinking-budget must be at least 1, got {self.thinking_budget}"]
        problems = []
        if self.template == "raw":
            problems.append("--thinking-budget renders the prompts itself; use --template chat or r1-zero, not raw")
        if self.backend == "openai" and self.template == "chat" and not self.tokenizer:
            problems.append("--thinking-budget with --backend openai needs --tokenizer (the served model's, to render prompts for the completions endpoint)")
        if self.data_parallel_size > 1:
            problems.append("--thinking-budget runs on one replica; use --shard to spread it over machines, not --data-parallel-size")
        tokens = self.thinking_budget + self.max_tokens
        if self.max_tokens >= 1 and (problem := self.context_problem(self.model, tokens, f"--thinking-budget {self.thinking_budget} plus --max-tokens {self.max_tokens} =")):
            problems.append(problem)
        return problems


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


def template_kwargs(pairs: list[str]) -> dict:
    """KEY=VALUE pairs as chat template keyword arguments: JSON scalars (true, false, null, numbers) as
    such, anything else as text.

    >>> template_kwargs(["enable_thinking=false", "reasoning_effort=low", "budget=512"])
    {'enable_thinking': False, 'reasoning_effort': 'low', 'budget': 512}
    >>> template_kwargs(["enable thinking"])
    Traceback (most recent call last):
    ValueError: --chat-template-kwargs 'enable thinking': write KEY=VALUE with KEY a template variable, e.g. enable_thinking=false
    """
    kwargs = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.isidentifier():
            raise ValueError(f"--chat-template-kwargs {pair!r}: write KEY=VALUE with KEY a template variable, e.g. enable_thinking=false")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        kwargs[key] = parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return kwargs
