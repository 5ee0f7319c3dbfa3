"""Client overhead of the openai backend: completions per second against a server that answers at once.

Claim: `r1distill generate --backend openai` is never the bottleneck in front of a teacher; it reaches
at least 80% of the rate of a bare asyncio HTTP loop (the floor: aiohttp, post, read, decode JSON)
at concurrency 64, 256 and 1024.

The server is a minimal keep-alive HTTP/1.1 responder in its own process (one core) that returns the
same chat completion to every POST, so the client side (the other core) is what is measured.
Three clients run side by side in one run, alternating, best of `--repeats`:
- bare loop: the floor: aiohttp workers that encode, post, read and decode the JSON bodies that
  generate() sends (same messages and sampling parameters), built before the clock starts;
- backend: OpenAIBackend.run with a no-op emit (HTTP, retries bookkeeping, reply parsing);
- generate(): the whole stage (input loading, planning, journal, Parquet shards, progress, manifest).

    python benchmarks/openai_client.py [--requests 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from r1distill.generate import GenerateConfig, generate
from r1distill.backends import Request, Sampling
from r1distill.backends.openai_compat import OpenAIBackend
from r1distill.generate.prompts import build_messages

SAMPLING = Sampling(max_tokens=64, temperature=0.6, top_p=0.95)

REPLY = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "<think>\nShort thought.\n</think>\n\nThe answer is \\boxed{42}."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
    }
).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)


class _Instant(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(RESPONSE)


def _serve(sock: socket.socket) -> None:
    os.sched_setaffinity(0, {0})
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(_Instant, sock=sock, backlog=4096))
    loop.run_forever()


def _problems(requests: int) -> list[str]:
    return [f"What is {i}*7?" for i in range(requests)]


async def _bare_loop(url: str, payloads: list[dict], concurrency: int) -> None:
    remaining = iter(payloads)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers={"Content-Type": "application/json"}) as session:

        async def worker():
            for payload in remaining:
                async with session.post(url + "/chat/completions", data=orjson.dumps(payload)) as reply:
                    orjson.loads(await reply.read())["choices"][0]["message"]["content"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _requests(requests: int) -> list[Request]:
    """The requests generate() sends for the benchmark prompts: same messages, same seeds."""
    return [Request(f"p{i}:0", build_messages(problem, "chat", None, None), seed=i) for i, problem in enumerate(_problems(requests))]


def run_bare(url: str, requests: int, concurrency: int) -> float:
    backend = OpenAIBackend("m", SAMPLING, [url])
    payloads = [backend.payload(request) for request in _requests(requests)]
    started = time.perf_counter()
    asyncio.run(_bare_loop(url, payloads, concurrency))
    return requests / (time.perf_counter() - started)


def run_backend(url: str, requests: int, concurrency: int) -> float:
    backend = OpenAIBackend("m", SAMPLING, [url], concurrency=concurrency)
    batch = _requests(requests)
    done = []
    started = time.perf_counter()
    asyncio.run(backend.run(batch, done.append))
    elapsed = time.perf_counter() - started
    assert len(done) == requests and all(r.finish_reason == "stop" for r in done)
    return requests / elapsed


def run_generate(url: str, requests: int, concurrency: int, workdir: Path) -> float:
    source = workdir / f"prompts-{requests}.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"id": f"p{i}", "problem": problem}) + "\n" for i, problem in enumerate(_problems(requests))))
    out = Path(tempfile.mkdtemp(dir=workdir))
    cfg = GenerateConfig(
        str(source), str(out), model="m", backend="openai", base_urls=[url], concurrency=concurrency,
        max_tokens=SAMPLING.max_tokens, temperature=SAMPLING.temperature, top_p=SAMPLING.top_p,
    )
    started = time.perf_counter()
    summary = generate(cfg)
    elapsed = time.perf_counter() - started
    assert summary.present == requests and summary.failed == 0
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256, 1024])
    args = parser.parse_args()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, set(range(1, os.cpu_count())))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, aiohttp {aiohttp.__version__}")
    print(f"{args.requests} requests per measurement, best of {args.repeats}\n")
    print("| concurrency | bare loop (req/s) | backend (req/s) | backend / bare | generate() (req/s) | generate() / bare |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as workdir:
        for concurrency in args.concurrency:
            best = {"bare": 0.0, "backend": 0.0, "generate": 0.0}
            for _ in range(args.repeats):
                best["bare"] = max(best["bare"], run_bare(url, args.requests, concurrency))
                best["backend"] = max(best["backend"], run_backend(url, args.requests, concurrency))
                best["generate"] = max(best["generate"], run_generate(url, args.requests, concurrency, Path(workdir)))
            print(
                f"| {concurrency} | {best['bare']:,.0f} | {best['backend']:,.0f} | {best['backend'] / best['bare']:.0%} "
                f"| {best['generate']:,.0f} | {best['generate'] / best['bare']:.0%} |",
                flush=True,
            )
    server.terminate()


if __name__ == "__main__":
    main()
