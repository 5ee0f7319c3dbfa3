"""The one small interface every teacher backend implements.

A backend turns `Request`s into `Result`s and hands each result to `emit` the moment it is finished, so
the stage can journal it before anything else can go wrong. It never raises for a single failed
request: that becomes a `Result` with finish_reason "error" and the reason, and the next run retries it.
Backends are chosen by name and imported only when chosen (vLLM is an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


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


@dataclass(slots=True)
class Result:
    """What a backend produced for one request."""

    key: str
    """The request's key."""
    text: str = ""
    """The generated text (the answer part when the server returns thinking separately)."""
    finish_reason: str = "stop"
    """stop, length or error."""
    reasoning: str | None = None
    """Thinking returned in a separate field (`reasoning_content` / `reasoning`), else None."""
    prefilled_think: bool = False
    """The prompt as rendered ended inside an opened <think> block (R1-Distill chat templates)."""
    completion_tokens: int | None = None
    """Tokens generated, when known."""
    prompt_tokens: int | None = None
    """Tokens in the prompt, when known."""
    error: str | None = None
    """Why the request failed; set only with finish_reason "error"."""


class Backend(Protocol):
    """Generates completions for requests; see the module docstring for the contract."""

    name: str

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        """Generate every request, calling `emit` once per request as soon as its result is ready."""
        ...

    def close(self) -> None:
        """Release models, sessions and worker processes."""
        ...
