"""The OpenAI-compatible backend: `vllm serve`, SGLang, llama.cpp server and hosted APIs (DeepSeek).

One aiohttp session and `concurrency` worker coroutines pulling from a shared request iterator (no
task per request, so 100k prompts cost nothing up front). Three mechanisms keep a run going when
servers misbehave:

- Replicas. Several base URLs share the load, least busy first. A replica that refuses connections,
  or fails EJECT_AFTER times in a row while another one serves, leaves the rotation (logged at
  WARNING the first time) and is probed again by one real request after a backoff that doubles. A
  request that failed on a replica that is now out is sent to a live one at once, without spending
  its retries, so while one replica lives no row fails. Only when every replica is out and has
  failed `max_retries + 1` probes do the remaining requests fail, quickly, with the reason.
- Connections that open gradually. The workers start one after another, RAMP_INTERVAL apart and
  all within RAMP_SECONDS, not all at once. A server that closes the connection after every reply
  (HTTP/1.0 or `Connection: close`, so every request opens a new one) also gets each request after
  a random pause of up to JITTER_SECONDS, as open-r1's client does for every request: its replies
  come in bursts, and so would the reconnections. A modest server (Python's http.server: one
  accepting thread, a backlog of 5) drops what overflows its accept queue; the client resends after
  1, 3, 7... seconds while the server idles (11 completions/s at concurrency 256, not hundreds).
  Servers that keep connections alive (vLLM, SGLang, llama.cpp, hosted APIs) never wait.
- Canonical completions. A server whose chat template opens `<think>` itself (`vllm serve` of an
  R1-Distill model without a reasoning parser) returns `thinking...</think>answer`: a reply that
  closes `</think>` with no opening tag before it gets its tag back. A reply cut before its
  `</think>` cannot be told from its text, so preflight learns once per run whether the template
  pre-fills: a local tokenizer when the model is a local folder, else vLLM's /tokenize and
  /detokenize of a rendered prompt; `--prefilled-think yes|no` says so where neither can tell.
- Failures with reasons. An attempt is retried with exponential backoff and full jitter on 429, 5xx,
  timeouts, dropped connections and malformed replies; a Retry-After header sets the wait. Other 4xx
  replies are permanent: the row's error is `http_<status>: <message>`, or `prompt_too_long: ...`
  when the server says the prompt does not fit, and reruns leave it alone unless --retry-failed.

`preflight` sends one tiny completion to every base URL before the stage writes anything, so a wrong
URL, model or key is one line. The API key travels only in the Authorization header; it and any
credentials in a base URL are scrubbed from error texts, URLs are logged redacted, and a server's text
loses its ANSI escapes and control characters before it is stored or shown (see redact.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Sequence

import aiohttp
import orjson

from r1distill.backends import (
    PROMPT_TOO_LONG,
    Request,
    Result,
    Sampling,
    ends_inside_think,
    failure_hint,
    is_permanent,
    local_template_prefills,
    map_finish_reason,
)
from r1distill.backends.replicas import Failure, Replica, Rotation
from r1distill.errors import UsageError
from r1distill.redact import redact_text, scrub, strip_controls
from r1distill.schema import FINISH_ERROR, closes_unopened_think

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 600.0
RAMP_INTERVAL = 0.004
"""Seconds between two workers' first requests: at most 250 new connections a second at the start."""
RAMP_SECONDS = 1.0
"""The longest the start may take: more than 250 workers start closer together."""
JITTER_SECONDS = 0.1
"""Most a request waits before opening a new connection to a server that closes them after each reply."""
PREFLIGHT_PROMPT = "Reply with OK."
PROBE_MESSAGES = [{"role": "user", "content": PREFLIGHT_PROMPT}]
"""The chat of the preflight request, and the prompt whose rendering tells whether the template pre-fills <think>."""
PREFLIGHT_TIMEOUT = 60.0
# How vLLM, SGLang, llama.cpp and OpenAI word a 400 for a prompt that does not fit the context.
TOO_LONG_MARKERS = (
    "maximum context length",
    "is longer than the maximum model length",
    "longer than the model's context length",
    "exceeds the available context size",
    "context_length_exceeded",
)


class MalformedReply(ValueError):
    """A 200 reply whose body is not an OpenAI completion."""


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        sampling: Sampling,
        base_urls: Sequence[str],
        api_key: str | None = None,
        concurrency: int = 64,
        max_retries: int = 8,
        request_timeout: float = 1800.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        prefilled_think: bool | None = None,
    ) -> None:
        self.model = model
        self.prefilled_think = prefilled_think
        """Whether the server's chat template opens <think> itself; None until preflight learns it (or cannot)."""
        self.sampling = sampling
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.replicas = [Replica(url, api_key) for url in base_urls]
        self._rotation = Rotation(self.replicas, retry_delay, max_retry_delay, max_retries)
        self._secrets = sorted({secret for replica in self.replicas for secret in replica.secrets}, key=len, reverse=True)

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=min(30.0, self.request_timeout))
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            pending = iter(requests)
            workers = min(self.concurrency, len(requests))
            spacing = min(RAMP_INTERVAL, RAMP_SECONDS / workers)
            await asyncio.gather(*(self._worker(session, pending, emit, i * spacing) for i in range(workers)))

    async def _worker(self, session: aiohttp.ClientSession, pending, emit: Callable[[Result], None], start: float) -> None:
        await asyncio.sleep(start)
        for request in pending:
            emit(await self.complete(session, request))

    def payload(self, request: Request) -> dict:
        """The JSON body for one request (chat/completions, or completions for raw text)."""
        body: dict = {
            "model": self.model,
            "max_tokens": request.cap(self.sampling),
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
        }
        if request.raw:
            body["prompt"] = request.messages[0]["content"]
        else:
            body["messages"] = request.messages
            if request.template_kwargs:
                body["chat_template_kwargs"] = request.template_kwargs
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def complete(self, session: aiohttp.ClientSession, request: Request) -> Result:
        """One request with its retries; never raises for a server or network problem."""
        body = orjson.dumps(self.payload(request))
        path = "/completions" if request.raw else "/chat/completions"
        attempts = 0
        # Failures charged to a replica rather than to the request are free, up to a bound that ends even a flapping fleet.
        free = len(self.replicas) * (self.max_retries + 1)
        while True:
            picked = await self._rotation.pick()
            if picked is None:
                return self._failed(request, self._rotation.problem(), attempts)
            replica, probe = picked
            outcome = await self._attempt(session, replica, request, path, body)
            if isinstance(outcome, Result):
                self._rotation.succeeded(replica, probe)
                outcome.prefilled_think = self._prefilled(request, outcome)
                return outcome
            self._rotation.failed(replica, probe, outcome)
            if outcome.permanent:
                return self._failed(request, outcome, attempts + 1)
            if not replica.live and free > 0:
                free -= 1
                continue
            attempts += 1
            if attempts > self.max_retries:
                return self._failed(request, outcome, attempts)
            await asyncio.sleep(outcome.retry_after if outcome.retry_after is not None else self._backoff(attempts - 1))

    async def _attempt(self, session: aiohttp.ClientSession, replica: Replica, request: Request, path: str, body: bytes) -> Result | Failure:
        outcome = await self._send(session, replica, request, path, body)
        if isinstance(outcome, Failure):
            outcome.detail = self._safe(outcome.detail)
        return outcome

    async def _send(self, session: aiohttp.ClientSession, replica: Replica, request: Request, path: str, body: bytes) -> Result | Failure:
        if replica.closes_connections:
            await asyncio.sleep(random.uniform(0.0, JITTER_SECONDS))
        replica.in_flight += 1
        try:
            async with session.post(replica.url(path), data=body, headers=replica.headers) as reply:
                status = reply.status
                raw = await reply.read()
                retry_after = reply.headers.get("Retry-After")
                if reply.version < aiohttp.HttpVersion11 or reply.headers.get("Connection", "").lower() == "close":
                    replica.closes_connections = True
        except aiohttp.ClientConnectorError as err:
            refused = isinstance(err.os_error, ConnectionRefusedError)
            return Failure("connection_refused" if refused else "connection_error", _describe(err), unreachable=True)
        except aiohttp.ConnectionTimeoutError as err:
            return Failure("connect_timeout", _describe(err), unreachable=True)
        except asyncio.TimeoutError as err:
            return Failure("timeout", _describe(err))
        except (aiohttp.ClientError, ConnectionError) as err:
            return Failure("disconnected", _describe(err))
        finally:
            replica.in_flight -= 1
        if status == 200:
            try:
                return parse_reply(request, raw)
            except MalformedReply as err:
                return Failure("malformed_reply", str(err))
        return http_failure(status, raw, retry_after)

    def _prefilled(self, request: Request, result: Result) -> bool:
        """Whether `result` continues a think block its prompt opened (see the module docstring)."""
        if request.raw:
            return ends_inside_think(request.messages[0]["content"])
        if result.reasoning is not None or self.prefilled_think is False:
            return False
        return bool(self.prefilled_think) or closes_unopened_think(result.text)

    def _failed(self, request: Request, failure: Failure, attempts: int) -> Result:
        problem = failure.text() + (f" ({attempts} attempts)" if attempts > 1 else "")
        return Result(key=request.key, finish_reason=FINISH_ERROR, error=problem[:1000])

    def _safe(self, text: str) -> str:
        """A server's text as a row's error or a log line may hold it: some servers echo the Authorization
        header or the URL, and any may send ANSI escapes that would drive the terminal it is shown on."""
        return strip_controls(redact_text(scrub(text, self._secrets)))

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_retry_delay, self.retry_delay * 2**attempt))

    def preflight(self, raw: bool = False) -> None:
        """One tiny completion per base URL; a one-line UsageError unless this run can be served.

        A replica that answers with a permanent error (a wrong key, an unknown model, a parameter it
        rejects) or with something that is not a completion is a configuration error. One that cannot
        be reached fails the run only when no other one answers; otherwise the run starts without it
        and probes it again with backoff.
        """
        outcomes = asyncio.run(self._preflight(raw))
        broken = [(r, o) for r, o in outcomes if isinstance(o, Failure) and (o.permanent or o.reason == "malformed_reply")]
        if broken:
            replica, failure = broken[0]
            raise UsageError(f"--base-url {replica.label} {_with_hint(failure)}")
        # A server that answers 5xx or slowly is up: the run's retries deal with it.
        down = [(r, o) for r, o in outcomes if isinstance(o, Failure) and (o.unreachable or o.reason == "disconnected")]
        if len(down) == len(outcomes):
            raise UsageError("no --base-url answers: " + "; ".join(f"{r.label} {_with_hint(o)}" for r, o in down))
        for replica, failure in down:
            self._rotation.take_out(replica, failure)
        if not raw and self.prefilled_think is None:
            live = next(replica for replica in self.replicas if replica.live)
            self.prefilled_think = local_template_prefills(self.model, PROBE_MESSAGES)
            if self.prefilled_think is None:
                self.prefilled_think = asyncio.run(_template_prefills(live, self.model))
            if self.prefilled_think is None:
                log.info(
                    "could not learn whether %s's chat template opens <think> itself (no /tokenize): replies that close "
                    "</think> without opening it get the tag back; if cut replies are thinking too, add --prefilled-think yes",
                    live.label,
                )
            elif self.prefilled_think:
                log.info("the chat template of %s opens <think> itself: every completion gets the opening tag back", self.model)

    async def _preflight(self, raw: bool) -> list[tuple[Replica, Result | Failure]]:
        request = Request("preflight", PROBE_MESSAGES, raw=raw, seed=0)
        body = orjson.dumps(self.payload(request) | {"max_tokens": 1})
        path = "/completions" if raw else "/chat/completions"
        timeout = aiohttp.ClientTimeout(total=min(PREFLIGHT_TIMEOUT, self.request_timeout), sock_connect=10.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            outcomes = await asyncio.gather(*(self._attempt(session, replica, request, path, body) for replica in self.replicas))
            for replica, outcome in zip(self.replicas, outcomes):
                if isinstance(outcome, Failure) and outcome.reason == "http_404":
                    served = await _served_models(session, replica)
                    if served:
                        outcome.detail += self._safe(f" (it serves: {', '.join(served[:10])})")
        return list(zip(self.replicas, outcomes))

    def close(self) -> None:
        """Nothing to release: the session lives only inside `run`."""


async def _served_models(session: aiohttp.ClientSession, replica: Replica) -> list[str]:
    """The model names a server lists at GET /models, or [] when it does not say."""
    try:
        async with session.get(replica.url("/models"), headers=replica.headers) as reply:
            listed = orjson.loads(await reply.read())["data"] if reply.status == 200 else []
        return [str(entry["id"]) for entry in listed]
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError, KeyError, TypeError):
        return []


async def _template_prefills(replica: Replica, model: str) -> bool | None:
    """Whether the server's chat template ends a prompt inside `<think>`, from vLLM's /tokenize and
    /detokenize of a rendered prompt (served beside /v1, at the server's root); None when it cannot say."""
    root = replica.prefix.removesuffix("/v1")
    timeout = aiohttp.ClientTimeout(total=PREFLIGHT_TIMEOUT, sock_connect=10.0)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            body = {"model": model, "messages": PROBE_MESSAGES, "add_generation_prompt": True}
            async with session.post(f"{root}/tokenize{replica.query}", json=body, headers=replica.headers) as reply:
                tokens = orjson.loads(await reply.read())["tokens"] if reply.status == 200 else None
            if not isinstance(tokens, list):
                return None
            async with session.post(f"{root}/detokenize{replica.query}", json={"model": model, "tokens": tokens}, headers=replica.headers) as reply:
                rendered = orjson.loads(await reply.read())["prompt"] if reply.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return ends_inside_think(rendered) if isinstance(rendered, str) else None


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _with_hint(failure: Failure) -> str:
    hint = failure_hint(failure.reason)
    return failure.text()[:300] + (f"; {hint}" if hint else "")


def http_failure(status: int, raw: bytes, retry_after: str | None = None) -> Failure:
    """What an HTTP error status means for the request and the replica.

    >>> http_failure(400, b'{"message": "This model\\'s maximum context length is 8192 tokens."}').reason
    'prompt_too_long'
    >>> [(f.reason, f.permanent) for f in (http_failure(401, b"bad key"), http_failure(429, b""), http_failure(503, b""))]
    [('http_401', True), ('http_429', False), ('http_503', False)]
    """
    text = raw.decode("utf-8", "replace")
    too_long = status == 400 and any(marker in text for marker in TOO_LONG_MARKERS)
    reason = PROMPT_TOO_LONG if too_long else f"http_{status}"
    return Failure(
        reason,
        text[:300].strip() or f"HTTP {status}",
        permanent=is_permanent(reason),
        answered=status < 500,
        retry_after=parse_retry_after(retry_after),
    )


def parse_reply(request: Request, raw: bytes) -> Result:
    """Map one OpenAI (chat) completion body to a Result.

    >>> body = b'{"choices":[{"message":{"content":"4","reasoning_content":"2+2"},"finish_reason":"stop"}],'
    >>> body += b'"usage":{"completion_tokens":7,"prompt_tokens":3}}'
    >>> r = parse_reply(Request("p:0", []), body)
    >>> (r.text, r.reasoning, r.finish_reason, r.completion_tokens)
    ('4', '2+2', 'stop', 7)
    """
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        if request.raw:
            text, reasoning = choice.get("text"), None
        else:
            message = choice["message"]
            text = message.get("content")
            # vLLM >= 0.11 says "reasoning"; DeepSeek's API, SGLang and older vLLM say "reasoning_content".
            reasoning = message.get("reasoning_content") or message.get("reasoning")
        usage = data.get("usage") or {}
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise MalformedReply(f"{type(err).__name__}: {err}") from err
    text = text or ""
    if not isinstance(text, str) or not (reasoning is None or isinstance(reasoning, str)):
        raise MalformedReply("content is not text")
    finish_reason, error = map_finish_reason(choice.get("finish_reason"))
    return Result(
        key=request.key,
        text=text,
        reasoning=reasoning,
        finish_reason=finish_reason,
        error=error,
        completion_tokens=usage.get("completion_tokens"),
        prompt_tokens=usage.get("prompt_tokens"),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped at 10 minutes.

    >>> parse_retry_after("2")
    2.0
    >>> parse_retry_after(None) is None
    True
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
