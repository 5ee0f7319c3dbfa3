"""Client overhead of the openai backend against a server that answers at once, and two unkind servers.

Claim: `r1distill generate --backend openai` is never the bottleneck in front of a teacher; it reaches
at least 80% of the rate of a bare asyncio HTTP loop (the floor: aiohttp, post, read, decode JSON)
at concurrency 64, 256 and 1024. And it keeps that pace when one of two base URLs is dead, and does
not flood a modest server.

The server is a minimal keep-alive HTTP/1.1 responder in its own process (one core) that returns the
same chat completion to every POST, so the client side (the other core) is what is measured.
Three clients run side by side in one run, alternating, best of `--repeats`:
- bare loop: the floor: aiohttp workers that encode, post, read and decode the JSON bodies that
  generate() sends (same messages and sampling parameters), built before the clock starts;
- backend: OpenAIBackend.run with a no-op emit (HTTP, retries bookkeeping, reply parsing);
- generate(): the whole stage (input loading, planning, journal, Parquet shards, progress, manifest).

Dead replica (`--cases dead-replica`): generate() of `--replica-rows` rows against the instant server
alone (the baseline), then against it plus a base URL where nothing listens (connections refused).

Small backlog (`--cases small-backlog`): Python's http.server (ThreadingHTTPServer, accept backlog 5,
HTTP/1.0 so a new connection per request) in its own process, `--backlog-rows` requests at
concurrency 256 from open-r1's client pattern (a random 0-100 ms sleep before each request, a
connector limit of 256, 10 s after an error) and from the backend; a fresh server for each
measurement, the two clients alternating, `--repeats` runs each. The pattern is the reference the
issue quotes; run the script on the previous commit for the backend's "before".

    python benchmarks/openai_client.py [--requests 100000] [--repeats 3] [--cases throughput dead-replica small-backlog]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import orjson

from r1distill.generate import GenerateConfig, generate
from r1distill.backends import Request, Sampling
from r1distill.backends.openai_compat import OpenAIBackend
from r1distill.prompts import build_messages

SAMPLING = Sampling(max_tokens=64, temperature=0.6, top_p=0.95)

REPLY = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "<think>\nShort thought.\n</think>\n\nThe answer is \\boxed{42}."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
    }
).encode()


def http_response(reply: bytes) -> bytes:
    """The whole HTTP/1.1 answer carrying `reply` as its JSON body."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)


class _Instant(asyncio.Protocol):
    """Answers every complete HTTP request on a connection with the same response, at once."""

    def __init__(self, response: bytes) -> None:
        self.response = response

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
            self.transport.write(self.response)


def serve_instantly(sock: socket.socket, reply: bytes = REPLY) -> None:
    """Serve `reply` to every request on `sock` from core 0 (run in a process of its own), so the client's cost is the limit."""
    os.sched_setaffinity(0, {0})
    response = http_response(reply)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(lambda: _Instant(response), sock=sock, backlog=4096))
    loop.run_forever()


class _Completion(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def log_message(self, *args):
        """Silent: an access log line per request would cost the server more than the reply."""


class _Backlog5(ThreadingHTTPServer):
    request_queue_size = 5
    daemon_threads = True


def _serve_backlog(server: ThreadingHTTPServer) -> None:
    os.sched_setaffinity(0, {0})
    server.serve_forever()


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


async def _open_r1_loop(url: str, payloads: list[dict], concurrency: int) -> None:
    """open-r1's generate_reasoning.py pattern: a connector limit, a random 0-100 ms sleep before each attempt, 10 s after an error."""
    remaining = iter(payloads)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:

        async def worker():
            for payload in remaining:
                for _ in range(10):
                    try:
                        await asyncio.sleep(random.uniform(0.0, 0.1))
                        async with session.post(url + "/chat/completions", data=orjson.dumps(payload)) as reply:
                            orjson.loads(await reply.read())["choices"][0]["message"]["content"]
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(10)

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
    elapsed, failed = _timed_generate([url], requests, concurrency, workdir)
    assert failed == 0
    return requests / elapsed


def throughput(url: str, requests: int, repeats: int, concurrencies: list[int], workdir: Path) -> None:
    print(f"\n{requests} requests per measurement, best of {repeats}\n")
    print("| concurrency | bare loop (req/s) | backend (req/s) | backend / bare | generate() (req/s) | generate() / bare |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency in concurrencies:
        best = {"bare": 0.0, "backend": 0.0, "generate": 0.0}
        for _ in range(repeats):
            best["bare"] = max(best["bare"], run_bare(url, requests, concurrency))
            best["backend"] = max(best["backend"], run_backend(url, requests, concurrency))
            best["generate"] = max(best["generate"], run_generate(url, requests, concurrency, workdir))
        print(
            f"| {concurrency} | {best['bare']:,.0f} | {best['backend']:,.0f} | {best['backend'] / best['bare']:.0%} "
            f"| {best['generate']:,.0f} | {best['generate'] / best['bare']:.0%} |",
            flush=True,
        )


def _timed_generate(urls: list[str], requests: int, concurrency: int, workdir: Path) -> tuple[float, int]:
    """Seconds generate() takes for `requests` fresh rows, and how many of them failed."""
    source = workdir / f"prompts-{requests}.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"id": f"p{i}", "problem": problem}) + "\n" for i, problem in enumerate(_problems(requests))))
    out = Path(tempfile.mkdtemp(dir=workdir))
    cfg = GenerateConfig(
        str(source), str(out), model="m", backend="openai", base_urls=urls, concurrency=concurrency,
        max_tokens=SAMPLING.max_tokens, temperature=SAMPLING.temperature, top_p=SAMPLING.top_p,
    )
    started = time.perf_counter()
    summary = generate(cfg)
    elapsed = time.perf_counter() - started
    assert summary.present == requests
    return elapsed, summary.failed


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def dead_replica(url: str, rows: int, workdir: Path) -> None:
    print(f"\nDead replica: generate() of {rows:,} rows at concurrency 64\n")
    print("| base URLs | seconds | rows/s | failed rows |")
    print("|---|---:|---:|---:|")
    for label, urls in (("the live server alone", [url]), ("the live server + a dead one", [url, _dead_url()])):
        elapsed, failed = _timed_generate(urls, rows, 64, workdir)
        print(f"| {label} | {elapsed:,.1f} | {rows / elapsed:,.0f} | {failed:,} |", flush=True)


def _backlog_server() -> tuple[str, multiprocessing.Process]:
    """A fresh http.server process per measurement, so no client inherits the last one's backlog."""
    server = _Backlog5(("127.0.0.1", 0), _Completion)
    process = multiprocessing.get_context("fork").Process(target=_serve_backlog, args=(server,), daemon=True)
    process.start()
    server.socket.close()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", process


def _run_backend(url: str, rows: int, concurrency: int) -> None:
    done = []
    asyncio.run(OpenAIBackend("m", SAMPLING, [url], concurrency=concurrency).run(_requests(rows), done.append))
    assert len(done) == rows and all(r.finish_reason == "stop" for r in done)


def small_backlog(rows: int, repeats: int) -> None:
    concurrency = 256
    payloads = [OpenAIBackend("m", SAMPLING, ["http://unused/v1"]).payload(request) for request in _requests(rows)]
    clients = {
        "open-r1 pattern (0-100 ms jitter)": lambda url: asyncio.run(_open_r1_loop(url, payloads, concurrency)),
        "backend": lambda url: _run_backend(url, rows, concurrency),
    }
    rates = {label: [] for label in clients}
    for _ in range(repeats):
        for label, client in clients.items():
            url, process = _backlog_server()
            started = time.perf_counter()
            client(url)
            rates[label].append(rows / (time.perf_counter() - started))
            process.terminate()
    print(f"\nSmall backlog: Python's http.server (backlog 5, HTTP/1.0), {rows:,} requests at concurrency {concurrency}, {repeats} runs each\n")
    print("| client | median req/s | runs (req/s) |")
    print("|---|---:|---|")
    for label, measured in rates.items():
        print(f"| {label} | {statistics.median(measured):,.0f} | {', '.join(f'{rate:,.0f}' for rate in measured)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--cases", nargs="+", choices=["throughput", "dead-replica", "small-backlog"], default=["throughput", "dead-replica", "small-backlog"])
    parser.add_argument("--replica-rows", type=int, default=5000)
    parser.add_argument("--backlog-rows", type=int, default=2000)
    args = parser.parse_args()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.get_context("fork").Process(target=serve_instantly, args=(sock,), daemon=True)
    server.start()
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, set(range(1, os.cpu_count())))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, aiohttp {aiohttp.__version__}")
    with tempfile.TemporaryDirectory() as workdir:
        if "throughput" in args.cases:
            throughput(url, args.requests, args.repeats, args.concurrency, Path(workdir))
        if "dead-replica" in args.cases:
            dead_replica(url, args.replica_rows, Path(workdir))
    server.terminate()
    if "small-backlog" in args.cases:
        small_backlog(args.backlog_rows, args.repeats)


if __name__ == "__main__":
    main()
