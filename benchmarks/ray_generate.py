"""Throughput of `generate --executor ray` with 1 and 2 actors against the local executor, and Ray's start-up.

Claim: on Ray, generate pays a fixed cost per run (starting the actors, planning the Ray Data
pipeline) and a per-row cost (each request and result crosses to an actor and back as JSON); the
driver's crash-safe store is the same as locally. This measures both on the CPU, where the client is
the limit: the openai backend against a server that answers at once (benchmarks/openai_client.py's
`serve_instantly`, pinned to core 0; the driver, Ray and its actors on the other cores).

Side by side in one run, in-process, each generate() into a fresh folder, best of `--repeats`:
- Ray start-up: `ray.init` of a new local cluster (a command without --ray-address pays it once),
  and its shutdown;
- local: `generate()` of `--rows` rows with --executor local;
- ray, N actors: the same rows with --executor ray --replicas N inside the already started cluster,
  and a one-row run of the same kind, whose time is the fixed cost per run; rows/s net of that cost
  is the steady rate.

    python benchmarks/ray_generate.py [--rows 20000] [--concurrency 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import ray

from r1distill.cluster import ClusterSettings, ray_cluster
from r1distill.generate import GenerateConfig, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_client import serve_instantly  # noqa: E402  (the client benchmark's instant server)


def _prompts(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i}*7?"}) + "\n" for i in range(rows)))
    return path


def _timed(source: Path, out: Path, url: str, concurrency: int, **cluster) -> float:
    cfg = GenerateConfig(str(source), str(out), model="m", backend="openai", base_urls=[url], concurrency=concurrency, max_tokens=64, **cluster)
    started = time.perf_counter()
    summary = generate(cfg)
    seconds = time.perf_counter() - started
    assert summary.present == summary.rows and not summary.failed, summary
    return seconds


def _start_up() -> tuple[float, float]:
    """Seconds to start a new local cluster and to shut it down."""
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    up = time.perf_counter()
    ray.shutdown()
    return up - started, time.perf_counter() - up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    server = multiprocessing.get_context("fork").Process(target=serve_instantly, args=(sock,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, set(range(1, os.cpu_count())))  # Ray's processes inherit it
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    source, one = _prompts(work / "p.jsonl", args.rows), _prompts(work / "one.jsonl", 1)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, seconds), seconds)

    try:
        for repeat in range(args.repeats):
            up, down = _start_up()
            keep("start", up)
            keep("shutdown", down)
            keep("local", _timed(source, work / f"local-{repeat}", url, args.concurrency))
            with ray_cluster(ClusterSettings(executor="ray")):
                for replicas in (1, 2):
                    cluster = {"executor": "ray", "replicas": replicas}
                    keep(f"fixed-{replicas}", _timed(one, work / f"one-{replicas}-{repeat}", url, args.concurrency, **cluster))
                    keep(f"ray-{replicas}", _timed(source, work / f"ray-{replicas}-{repeat}", url, args.concurrency, **cluster))
    finally:
        server.kill()
    print(f"{args.rows:,} rows, concurrency {args.concurrency}, {os.cpu_count()} cores, Python {platform.python_version()}, Ray {ray.__version__}, best of {args.repeats}")
    print(f"Ray start-up (ray.init of a new local cluster): {best['start']:.1f} s; its shutdown: {best['shutdown']:.1f} s")
    print("| executor | seconds | rows/s | fixed cost per run (s) | rows/s net of it |")
    print("|---|---:|---:|---:|---:|")
    print(f"| local | {best['local']:.2f} | {args.rows / best['local']:,.0f} | - | - |")
    for replicas in (1, 2):
        seconds, fixed = best[f"ray-{replicas}"], best[f"fixed-{replicas}"]
        net = f"{args.rows / (seconds - fixed):,.0f}" if seconds > fixed else "-"
        print(f"| ray, {replicas} actor{'s' if replicas > 1 else ''} | {seconds:.2f} | {args.rows / seconds:,.0f} | {fixed:.2f} | {net} |")


if __name__ == "__main__":
    main()
