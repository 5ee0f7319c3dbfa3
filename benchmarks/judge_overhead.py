"""Judge overhead per row: what `filter --check judge` adds to a row against a server that answers at once.

Claim: the judge's client side (prompt building, hashing, the cache, HTTP through the openai backend,
verdict parsing) costs about a millisecond per row, nothing next to a real judge model's seconds, and
a rerun that finds every verdict in OUT's cache costs about what the rules alone cost.

The server is a minimal keep-alive HTTP/1.1 responder in its own process (one core) that returns the
same judge reply (`VERDICT: CORRECT`) to every POST, as benchmarks/openai_client.py's does with a
completion. Four runs side by side, in-process (import and start-up excluded, one warm-up run first),
alternating, best of `--repeats`, over the same table of `--rows` traces whose gold is free text
("Paris"), which math rules cannot decide:
- rules only: `filter --check accuracy` (the floor);
- judge, unverifiable: `--check judge`, every row sent (none is decided by the rules);
- judge, always: `--judge-when always`, every row sent;
- judge, cached rerun: `--judge-when always` again into a folder holding the first run's cache.

    python benchmarks/judge_overhead.py [--rows 5000] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.rewards.judge import CACHE_FILE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_client import serve_instantly  # noqa: E402  (the client benchmark's instant server, with the judge's reply)

REPLY = json.dumps({
    "id": "judge-bench", "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Both name the same city.\nVERDICT: CORRECT"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 200, "completion_tokens": 12, "total_tokens": 212},
}).encode()

def _traces(path: Path, rows: int) -> Path:
    thinking = "We recall the capitals of Europe one by one until we reach France. " * 20
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({
                "id": f"p{i}:0", "prompt_id": f"p{i}", "sample": 0, "problem": f"Which city is the capital of France? (variant {i})",
                "answer": "Paris", "completion": f"<think>\n{thinking}\n</think>\n\nThe capital of France is Paris.", "finish_reason": "stop",
                "completion_tokens": 300,
            }) + "\n")
    return path


def _timed(traces: Path, out: Path, **settings) -> float:
    started = time.perf_counter()
    filter_traces(FilterConfig(input=str(traces), output=str(out), dedup="none", workers=1, **settings))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    server = multiprocessing.get_context("fork").Process(target=serve_instantly, args=(sock, REPLY), daemon=True)
    server.start()
    judge = {"judge_model": "judge", "judge_base_urls": [f"http://127.0.0.1:{sock.getsockname()[1]}/v1"], "judge_concurrency": args.concurrency}
    work = Path(tempfile.mkdtemp(prefix="judge-bench-"))
    try:
        traces = _traces(work / "traces.jsonl", args.rows)
        _timed(traces, work / "warm-up", checks=["accuracy"])
        best: dict[str, float] = {}
        for repeat in range(args.repeats):
            here = work / str(repeat)
            timed = [("rules only (--check accuracy)", _timed(traces, here / "rules", checks=["accuracy"]))]
            timed.append(("judge, unverifiable (every row sent)", _timed(traces, here / "unverifiable", checks=["judge"], **judge)))
            timed.append(("judge, always (every row sent)", _timed(traces, here / "always", checks=["judge"], judge_when="always", **judge)))
            (here / "rerun").mkdir()
            shutil.copy(here / "always" / CACHE_FILE, here / "rerun" / CACHE_FILE)
            timed.append(("judge, always, cached rerun (nothing sent)", _timed(traces, here / "rerun", checks=["judge"], judge_when="always", **judge)))
            for name, seconds in timed:
                best[name] = min(best.get(name, seconds), seconds)
        runs = list(best.items())
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    floor = runs[0][1]
    print(f"{args.rows:,} rows, judge concurrency {args.concurrency}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| run | seconds | rows/s | added per row |")
    print("|---|---:|---:|---:|")
    for name, seconds in runs:
        added = (seconds - floor) / args.rows * 1000
        print(f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {'-' if seconds is floor else f'{added:.2f} ms'} |")


if __name__ == "__main__":
    main()
