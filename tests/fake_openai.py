"""Local OpenAI-compatible servers for tests: an aiohttp one with fault injection, and Python's http.server.

`FakeOpenAI` picks its behaviour for a request from directives in the prompt text:

    [[500x2]]       the first 2 attempts answer HTTP 500
    [[429x1]]       the first attempt answers 429 with Retry-After: 1
    [[slowx1]]      the first attempt sleeps `slow_seconds` before answering (past the client's timeout)
    [[dropx2]]      the first 2 attempts drop the connection without an answer
    [[badjsonx1]]   the first attempt answers 200 with a body that is not JSON
    [[fail]]        every attempt answers 500
    [[401echo]]     answers 401 echoing the Authorization header, as some APIs do
    [[400]]         answers 400 (a request the server refuses as it is)
    [[toolong]]     answers 400 with vLLM's message for a prompt longer than the context
    [[ansi]]        answers 400 with ANSI escapes and control characters in its message (recolour, retitle, erase)
    [[reasoning]]   returns the thinking in `reasoning_content`, not inline
    [[length]]      finish_reason "length"
    [[textusage]]   usage counts as text: completion_tokens "seventeen", prompt_tokens "11"
    [[cutthink]]    chat: thinking cut at the token limit before its </think>, finish_reason "length"
    [[cut]]         raw text (completions endpoint): thinking that never closes, finish_reason "length",
                    unless the prompt already closed it (a forced continuation): then " 42", stop
Everything else answers at once with an inline <think> block and a boxed answer, or with what `reply`
(a function of the prompt text, e.g. a judge's verdict) returns as the content. With `model` set, a
request for another model gets OpenAI's 404; with `refusal` set, every request gets a 400 saying it. With
`prefills_think`, the chat template (ChatML) opens <think> itself, as `vllm serve` of an R1-Distill model
does: chat replies lack the opening tag, and vLLM's /tokenize and /detokenize (at the server's root; absent
with `tokenize=False`) show it. The client's preflight request is answered like any
other but recorded in `preflights`, not in `requests` and `attempts`.

`BacklogServer` is Python's own ThreadingHTTPServer with its accept backlog of 5 (and HTTP/1.0, a new
connection per request): the modest server that hundreds of simultaneous connections flood.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiohttp import web

from r1distill.backends.openai_compat import PREFLIGHT_PROMPT

DIRECTIVE = re.compile(r"\[\[(\w+?)(?:x(\d+))?\]\]")


@dataclass
class FakeOpenAI:
    """Runs in a background thread; `url` is the base URL to give the client."""

    delay: float = 0.0
    slow_seconds: float = 5.0
    model: str | None = None
    """The only model served (any when None)."""
    prefills_think: bool = False
    """The chat template ends the prompt inside an opened <think> block."""
    tokenize: bool = True
    """Serve vLLM's /tokenize and /detokenize."""
    refusal: str | None = None
    """When set, every request (the preflight too) is answered 400 with this text."""
    reply: Callable[[str], str] | None = None
    """When set, the content of every chat reply that no directive decides, from the prompt's text."""
    hold_continuations: bool = False
    """While set, a raw-text request whose prompt already closed its thinking (budget forcing's second
    request) waits unanswered: a test stops the client between the two requests."""
    attempts: Counter = field(default_factory=Counter)
    served: int = 0
    requests: list[dict] = field(default_factory=list)
    preflights: list[dict] = field(default_factory=list)

    def start(self) -> FakeOpenAI:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the server (connections to it are refused from then on); stopping twice is harmless."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        if self.tokenize:
            app.router.add_post("/tokenize", self._tokenize)
            app.router.add_post("/detokenize", self._detokenize)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        ready.set()
        self._loop.run_forever()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model or "any", "object": "model"}]})

    def render(self, messages: list[dict]) -> str:
        """The prompt as this server's chat template renders it (ChatML)."""
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n" + ("<think>\n" if self.prefills_think else "")

    async def _tokenize(self, request: web.Request) -> web.Response:
        # One token per UTF-8 byte: what matters is that /detokenize gives the rendered text back.
        tokens = list(self.render((await request.json())["messages"]).encode())
        return web.json_response({"count": len(tokens), "max_model_len": 8192, "tokens": tokens})

    async def _detokenize(self, request: web.Request) -> web.Response:
        return web.json_response({"prompt": bytes((await request.json())["tokens"]).decode()})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        seen = {"path": request.path, "query": request.query_string, "authorization": request.headers.get("Authorization"), "body": body}
        if self.refusal is not None:
            return web.Response(status=400, text=self.refusal)
        if self.model and body["model"] != self.model:
            message = f"The model `{body['model']}` does not exist or you do not have access to it."
            return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"}}, status=404)
        if text == PREFLIGHT_PROMPT:
            self.preflights.append(seen)
            choice = {"message": {"role": "assistant", "content": "OK"}} if chat else {"text": "OK"}
            return web.json_response({"choices": [choice | {"finish_reason": "length"}]})
        self.requests.append(seen)
        self.attempts[text] += 1
        attempt = self.attempts[text]
        directives = {name: int(count) if count else None for name, count in DIRECTIVE.findall(text)}

        def first(name: str) -> bool:
            return name in directives and attempt <= (directives[name] or 1)

        if self.delay:
            await asyncio.sleep(self.delay)
        while self.hold_continuations and not chat and "</think>" in text:
            await asyncio.sleep(0.02)
        if "fail" in directives or first("500"):
            return web.Response(status=500, text="internal error")
        if first("429"):
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        if first("slow"):
            await asyncio.sleep(self.slow_seconds)
        if first("drop"):
            request.transport.close()
            return web.Response(status=500)
        if first("badjson"):
            return web.Response(status=200, text="{not json", content_type="application/json")
        if "401echo" in directives:
            return web.Response(status=401, text=f"Incorrect API key provided: {request.headers.get('Authorization')}")
        if "400" in directives:
            return web.json_response({"object": "error", "message": "temperature must be at most 2", "code": 400}, status=400)
        if "ansi" in directives:
            return web.Response(status=400, text="\x1b[31mbad request\x1b[0m\x1b]0;owned\x07\r\x1b[2Kall good\x08")
        if "toolong" in directives:
            message = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
            return web.json_response({"object": "error", "message": message, "type": "BadRequestError", "code": 400}, status=400)
        thinking = f"Thinking about: {text[:40]}"
        answer = "The answer is \\boxed{42}."
        finish = "length" if "length" in directives else "stop"
        if chat and "reasoning" in directives:
            choice = {"message": {"role": "assistant", "content": answer, "reasoning_content": thinking}, "finish_reason": finish}
        elif chat and self.reply is not None:
            choice = {"message": {"role": "assistant", "content": self.reply(text)}, "finish_reason": finish}
        elif chat:
            opened = "" if self.prefills_think else "<think>\n"
            content = f"{opened}{thinking}" if "cutthink" in directives else f"{opened}{thinking}\n</think>\n\n{answer}"
            finish = "length" if "cutthink" in directives else finish
            choice = {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
        elif "cut" in directives:
            closed = "</think>" in text
            choice = {"text": " 42" if closed else " Let me think about it some more", "finish_reason": "stop" if closed else "length"}
        else:
            choice = {"text": f" {thinking} </think> <answer> 42 </answer>", "finish_reason": finish}
        self.served += 1
        usage = {"prompt_tokens": "11", "completion_tokens": "seventeen"} if "textusage" in directives else {"prompt_tokens": 11, "completion_tokens": 17}
        payload = {"id": "cmpl-test", "object": "chat.completion", "choices": [choice], "usage": usage}
        return web.Response(text=json.dumps(payload), content_type="application/json")


COMPLETION = json.dumps(
    {
        "object": "chat.completion",
        "choices": [{"message": {"role": "assistant", "content": "<think>\nShort.\n</think>\n\n\\boxed{42}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5},
    }
).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(COMPLETION)))
        self.end_headers()
        self.wfile.write(COMPLETION)
        with self.server.lock:
            self.server.served += 1

    def log_message(self, format: str, *args) -> None:
        """Silent: a test's output is its assertions."""


class BacklogServer(ThreadingHTTPServer):
    """http.server answering every POST with the same completion; `url` is the base URL, `served` the POSTs answered."""

    request_queue_size = 5
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.served = 0
        self.lock = threading.Lock()

    def start(self) -> BacklogServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def dead_url() -> str:
    """A base URL on a local port that nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
