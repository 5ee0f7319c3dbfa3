"""The OpenAI-compatible backend: `vllm serve`, SGLang, llama.cpp server and hosted APIs (DeepSeek).

One aiohttp session, `concurrency` worker coroutines pulling from a shared request iterator (no task
per request, so 100k prompts cost nothing up front), and several base URLs with least-busy routing so
one client can feed a fleet of servers. A request is retried with exponential backoff and full jitter
on 429, 5xx, timeouts, dropped connections and malformed replies; a Retry-After header sets the wait.
Other 4xx replies (a prompt over the context length, say) are final. A request that still fails is
returned as an error row for the next run to retry. The API key travels only in the Authorization
header and is scrubbed from any error text a server echoes back.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import random
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from r1distill.backends import Request, Result, Sampling, map_finish_reason
from r1distill.schema import FINISH_ERROR

RETRY_STATUSES = frozenset({408, 409, 425, 429})
MAX_RETRY_AFTER = 600.0


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
    ) -> None:
        self.model = model
        self.sampling = sampling
        self.base_urls = [url.rstrip("/") for url in base_urls]
        self.api_key = api_key
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._in_flight = dict.fromkeys(self.base_urls, 0)
        self._turn = itertools.count()

    async def run(self, requests: Sequence[Request], emit: Callable[[Result], None]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=min(30.0, self.request_timeout))
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
            pending = iter(requests)
            workers = min(self.concurrency, len(requests))
            await asyncio.gather(*(self._worker(session, pending, emit) for _ in range(workers)))

    async def _worker(self, session: aiohttp.ClientSession, pending, emit: Callable[[Result], None]) -> None:
        for request in pending:
            emit(await self.complete(session, request))

    def payload(self, request: Request) -> dict:
        """The JSON body for one request (chat/completions, or completions for raw text)."""
        body: dict = {
            "model": self.model,
            "max_tokens": self.sampling.max_tokens,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
        }
        if request.raw:
            body["prompt"] = request.messages[0]["content"]
        else:
            body["messages"] = request.messages
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    async def complete(self, session: aiohttp.ClientSession, request: Request) -> Result:
        """One request with its retries; never raises for a server or network problem."""
        body = orjson.dumps(self.payload(request))
        path = "/completions" if request.raw else "/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            base = self._pick()
            self._in_flight[base] += 1
            wait = None
            try:
                async with session.post(base + path, data=body) as reply:
                    status = reply.status
                    raw = await reply.read()
                    retry_after = reply.headers.get("Retry-After")
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as err:
                problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            else:
                if status == 200:
                    try:
                        return parse_reply(request, raw)
                    except MalformedReply as err:
                        problem = f"malformed reply: {err}"
                else:
                    problem = f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"
                    if status < 500 and status not in RETRY_STATUSES:
                        return self._failed(request, problem)
                    wait = parse_retry_after(retry_after)
            finally:
                self._in_flight[base] -= 1
            if attempt < self.max_retries:
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
        return self._failed(request, f"failed after {self.max_retries + 1} attempts; last: {problem}")

    def _failed(self, request: Request, problem: str) -> Result:
        if self.api_key:
            problem = problem.replace(self.api_key, "***")
        return Result(key=request.key, finish_reason=FINISH_ERROR, error=problem[:1000])

    def _pick(self) -> str:
        """The base URL with the fewest requests in flight; ties go round-robin."""
        if len(self.base_urls) == 1:
            return self.base_urls[0]
        least = min(self._in_flight.values())
        candidates = [url for url in self.base_urls if self._in_flight[url] == least]
        return candidates[next(self._turn) % len(candidates)]

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_retry_delay, self.retry_delay * 2**attempt))

    def close(self) -> None:
        """Nothing to release: the session lives only inside `run`."""


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


def redact_url(url: str) -> str:
    """A base URL safe to log: user and password removed.

    >>> redact_url("http://user:secret@gpu-7:8000/v1")
    'http://gpu-7:8000/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
