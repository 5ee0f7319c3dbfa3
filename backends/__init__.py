"""Model access for every stage: one small `Backend` protocol, three backends, one `make_backend`.

A backend turns `Request`s into `Result`s and hands each result to `emit` the moment it is finished, so
the caller can journal it before anything else can go wrong. It never raises for a single failed
request: that becomes a `Result` with finish_reason "error" and an error text that starts with a short
reason code (`http_401: Incorrect API key`, `timeout: ...`, `prompt_too_long: ...`). generate counts
failures by that code, names the fix, and on a rerun retries every failed row except the permanent
ones (the server refused the request as it is), which wait for --retry-failed.

- transformers (`hf.py`): batched sampling on the CPU or one GPU; the embedded default model's home.
- openai (`openai_compat.py`): any OpenAI-compatible server (`vllm serve`, SGLang, DeepSeek's API);
  `replicas.py` picks the base URL of each attempt and takes failing ones out of the rotation.
- vllm (`vllm_offline.py`): offline `vllm.LLM` on local GPUs.

generate uses them for teacher traces; eval and an LLM judge use the same ones. Importing this package
loads no stage code and no heavy library: a backend's module (torch, aiohttp, vLLM) is imported only
when `make_backend` builds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from r1distill.schema import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, THINK_OPEN

BACKENDS = ("transformers", "openai", "vllm")


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by every request of a run."""

    max_tokens: int
    """Most tokens generated per completion."""
    temperature: float
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float
    """Nucleus sampling mass."""


@dataclass(slots=True)
class Request:
    """One completion to generate: one sample of one prompt."""

    key: str
    """The trace id the result belongs to."""
    messages: list[dict[str, str]]
    """Chat messages; for a raw-text request, one user message holding the whole text."""
    raw: bool = False
    """Send messages[0] as plain text (completions endpoint, no chat template), as the R1-Zero prompt is."""
    seed: int | None = None
    """Per-request seed where the backend supports one, so a rerun can reproduce a sample."""
    template_kwargs: dict[str, Any] | None = None
    """Variables for the chat template (`enable_thinking=False`): applied locally, sent to servers as chat_template_kwargs."""
    max_tokens: int | None = None
    """This request's cap on generated tokens, where it differs from the run's `Sampling.max_tokens`: one
    backend (one loaded model, one vLLM engine) serves eval's runs of a model at every thinking budget."""

    def cap(self, sampling: Sampling) -> int:
        """The most tokens this request may generate.

        >>> Request("a", []).cap(Sampling(64, 0.0, 1.0)), Request("b", [], max_tokens=16).cap(Sampling(64, 0.0, 1.0))
        (64, 16)
        """
        return sampling.max_tokens if self.max_tokens is None else self.max_tokens


@dataclass(slots=True)
class Result:
    """What a backend produced for one request."""

    key: str
    """The request's key."""
    text: str = ""
    """The generated text (the answer part when the server returns thinking separately)."""
    finish_reason: str = FINISH_STOP
    """stop, length or error (schema.FINISH_REASONS)."""
    reasoning: str | None = None
    """Thinking returned in a separate field (`reasoning_content` / `reasoning`), else None."""
    prefilled_think: bool = False
    """The prompt as rendered ended inside an opened <think> block (R1-Distill chat templates)."""
    completion_tokens: int | None = None
    """Tokens generated, when known."""
    prompt_tokens: int | None = None
    """Tokens in the prompt, when known."""
    error: str | None = None
    """Why the request failed, as "<reason>: <detail>"; set only with finish_reason "error"."""


class Backend(Protocol):
    """Generates completions for requests; see the module docstring for the contract."""

    name: str

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        """Generate every request, calling `emit` once per request as soon as its result is ready."""
        ...

    def close(self) -> None:
        """Release models, sessions and worker processes."""
        ...


def render_prompt(tokenizer: Any, request: Request) -> str:
    """The exact text a local model continues: the chat template applied, or the raw prompt."""
    if request.raw:
        return request.messages[0]["content"]
    return tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True, **(request.template_kwargs or {}))


def ends_inside_think(rendered_prompt: str) -> bool:
    """Whether a rendered prompt pre-fills an opened think block (the completion starts inside it).

    >>> ends_inside_think("<|im_start|>assistant\\n<think>\\n"), ends_inside_think("<|im_start|>assistant\\n")
    (True, False)
    """
    return rendered_prompt.rstrip().endswith(THINK_OPEN)


def local_template_prefills(model: str, messages: list[dict[str, str]]) -> bool | None:
    """Whether the chat template of a model in a local folder, applied to `messages`, opens <think> itself;
    None when there is no such folder with a chat template (a served model name) or transformers is missing."""
    if not (Path(model) / "tokenizer_config.json").is_file():
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    tokenizer = AutoTokenizer.from_pretrained(model)
    if not tokenizer.chat_template:
        return None
    return ends_inside_think(render_prompt(tokenizer, Request("probe", messages)))


PROMPT_TOO_LONG = "prompt_too_long"
"""The reason of a row whose prompt (with room for the output) does not fit the model's context."""
# HTTP statuses below 500 that say "not now" rather than "never".
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
_REASON = re.compile(r"([A-Za-z][A-Za-z0-9_]*): ")
_HTTP = re.compile(r"http_(\d{3})")

HINTS = {
    "http_401": "check the API key in the variable that --api-key-env names",
    "http_403": "check the API key in the variable that --api-key-env names, and its rights",
    "http_404": "check --model and the base URL, which usually ends in /v1",
    "http_429": "the server limits the request rate: lower --concurrency",
    "connection_refused": "is the server up at that --base-url?",
    "connection_error": "check the --base-url host name and the network",
    "connect_timeout": "nothing answered: check the --base-url host and the network",
    "timeout": "the server is slow: raise --request-timeout or lower --concurrency",
    "disconnected": "the server dropped connections: see its log, or lower --concurrency",
    "malformed_reply": "the replies are not OpenAI completions: check the base URL, which usually ends in /v1",
    PROMPT_TOO_LONG: "the prompt does not fit the model's context: drop long prompts, or use a model with a longer one",
}


def failure_reason(error: str | None) -> str:
    """The reason code at the start of a failed row's error text ("error" when it has none).

    >>> failure_reason("http_401: Incorrect API key provided")
    'http_401'
    >>> failure_reason("failed after 9 attempts; last: HTTP 500")
    'error'
    """
    match = _REASON.match(error or "")
    return match.group(1) if match else "error"


def is_permanent(reason: str) -> bool:
    """A failure that retrying the same request cannot fix: a 4xx refusal or a prompt that does not fit.

    >>> [is_permanent(r) for r in ("http_400", "http_429", "http_503", "timeout", "prompt_too_long")]
    [True, False, False, False, True]
    """
    if reason == PROMPT_TOO_LONG:
        return True
    match = _HTTP.fullmatch(reason)
    return bool(match) and 400 <= int(match.group(1)) < 500 and int(match.group(1)) not in TRANSIENT_STATUSES


def failure_hint(reason: str) -> str | None:
    """What to check for a failure reason, when there is something to say.

    >>> failure_hint("http_502")
    'the server failed: see its log'
    """
    if reason.startswith("http_5"):
        return "the server failed: see its log"
    return HINTS.get(reason)


def prompt_too_long(request: Request, prompt_tokens: int, context: int) -> Result:
    """The error row of a prompt that leaves no room for one output token in the model's context."""
    return Result(
        key=request.key, finish_reason=FINISH_ERROR, prompt_tokens=prompt_tokens,
        error=f"{PROMPT_TOO_LONG}: the prompt has {prompt_tokens} tokens, the model's context is {context}",
    )


# Finish reasons that mean the model stopped by itself: OpenAI and vLLM say "stop"; TGI and other
# servers say "eos_token" or "stop_sequence"; a tool call is a finished turn too.
_STOPPED = frozenset({"stop", "eos", "eos_token", "stop_sequence", "end_turn", "tool_calls", "function_call"})
_CUT_OFF = frozenset({"length", "max_tokens"})


def map_finish_reason(reason: str | None) -> tuple[str, str | None]:
    """A server's or engine's finish reason as (schema finish_reason, error).

    A reason that is neither a stop nor the token limit (`content_filter`, `abort`) is an error that
    carries it: the text may be cut anywhere, and a rerun retries it. No reason at all (servers that
    omit it) counts as a stop.

    >>> map_finish_reason("stop"), map_finish_reason("length"), map_finish_reason("content_filter")
    (('stop', None), ('length', None), ('error', "finish_reason 'content_filter'"))
    """
    if reason is None or reason in _STOPPED:
        return FINISH_STOP, None
    if reason in _CUT_OFF:
        return FINISH_LENGTH, None
    return FINISH_ERROR, f"finish_reason {reason!r}"


def make_backend(kind: str, model: str, sampling: Sampling, **options: Any) -> Backend:
    """The backend `kind` (one of BACKENDS) for `model`; `options` go to its constructor.

    transformers: batch_size, device, seed. openai: base_urls, api_key, concurrency, max_retries,
    request_timeout, retry_delay, prefilled_think. vllm: tensor_parallel_size, max_model_len, batch_size, seed.
    """
    if kind == "openai":
        from r1distill.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(model, sampling, **options)
    if kind == "vllm":
        from r1distill.backends.vllm_offline import VLLMBackend

        return VLLMBackend(model, sampling, **options)
    if kind == "transformers":
        from r1distill.backends.hf import TransformersBackend

        return TransformersBackend(model, sampling, **options)
    raise ValueError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
