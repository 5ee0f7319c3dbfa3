"""A local OpenAI-compatible server for tests, with fault injection driven by the prompt text.

Directives in a prompt's text pick the behaviour of the requests for it:
    [[500x2]]       the first 2 attempts answer HTTP 500
    [[429x1]]       the first attempt answers 429 with Retry-After: 1
    [[slowx1]]      the first attempt sleeps `slow_seconds` before answering (past the client's timeout)
    [[dropx2]]      the first 2 attempts drop the connection without an answer
    [[badjsonx1]]   the first attempt answers 200 with a body that is not JSON
    [[fail]]        every attempt answers 500
    [[401echo]]     answers 401 echoing the Authorization header, as some APIs do
    [[reasoning]]   returns the thinking in `reasoning_content`, not inline
    [[length]]      finish_reason "length"
    [[textusage]]   usage counts as text: completion_tokens "seventeen", prompt_tokens "11"
    [[cut]]         raw text (completions endpoint): thinking that never closes, finish_reason "length",
                    unless the prompt already closed it (a forced continuation): then " 42", stop
Everything else answers at once with an inline <think> block and a boxed answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

DIRECTIVE = re.compile(r"\[\[(\w+?)(?:x(\d+))?\]\]")


@dataclass
class FakeOpenAI:
    """Runs in a background thread; `url` is the base URL to give the client."""

    delay: float = 0.0
    slow_seconds: float = 5.0
    attempts: Counter = field(default_factory=Counter)
    served: int = 0
    requests: list[dict] = field(default_factory=list)

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
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        self.requests.append({"path": request.path, "authorization": request.headers.get("Authorization"), "body": body})
        self.attempts[text] += 1
        attempt = self.attempts[text]
        directives = {name: int(count) if count else None for name, count in DIRECTIVE.findall(text)}

        def first(name: str) -> bool:
            return name in directives and attempt <= (directives[name] or 1)

        if self.delay:
            await asyncio.sleep(self.delay)
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
        thinking = f"Thinking about: {text[:40]}"
        answer = "The answer is \\boxed{42}."
        finish = "length" if "length" in directives else "stop"
        if chat and "reasoning" in directives:
            choice = {"message": {"role": "assistant", "content": answer, "reasoning_content": thinking}, "finish_reason": finish}
        elif chat:
            choice = {"message": {"role": "assistant", "content": f"<think>\n{thinking}\n</think>\n\n{answer}"}, "finish_reason": finish}
        elif "cut" in directives:
            closed = "</think>" in text
            choice = {"text": " 42" if closed else " Let me think about it some more", "finish_reason": "stop" if closed else "length"}
        else:
            choice = {"text": f" {thinking} </think> <answer> 42 </answer>", "finish_reason": finish}
        self.served += 1
        usage = {"prompt_tokens": "11", "completion_tokens": "seventeen"} if "textusage" in directives else {"prompt_tokens": 11, "completion_tokens": 17}
        payload = {"id": "cmpl-test", "object": "chat.completion", "choices": [choice], "usage": usage}
        return web.Response(text=json.dumps(payload), content_type="application/json")
