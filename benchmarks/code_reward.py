"""Code reward throughput: programs judged per second with their tests, sandboxed against unsandboxed.

The same programs (synth code problems, half right, a quarter wrong, a quarter crashing; 6 call-based
tests each) are judged by the code reward twice in one run: each test in a fresh bubblewrap sandbox,
and each test in a plain subprocess with the same harness and limits (--allow-unsandboxed, with
bwrap pointed at a missing path). Both must give the same verdicts. Workers: the usable cores.

    python benchmarks/code_reward.py [--programs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import polars as pl

from r1distill.rewards.code import CodeReward
from r1distill.synth.run import SynthConfig, synth

WRONG = "def f(xs):\n    return None\n"
CRASH = "def f(xs):\n    return xs[10 ** 9]\n"


def programs(count: int) -> tuple[list[str], list[str]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "code.jsonl"
        synth(SynthConfig(task="code", output=str(path), n=count))
        rows = pl.read_ndjson(path).to_dicts()
    codes = [row["answer"] if i % 2 == 0 else (WRONG if i % 4 == 1 else CRASH) for i, row in enumerate(rows)]
    return [f"<think>\nok\n</think>\n\n```python\n{code}```" for code in codes], [row["tests"] for row in rows]


def judged(reward: CodeReward, completions: list[str], tests: list[str]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    verdicts = [j.verdict for j in reward.judge(completions, tests=tests)]
    return time.perf_counter() - started, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=64)
    args = parser.parse_args()
    completions, tests = programs(args.programs)
    cases = sum(len(json.loads(t)["inputs"]) for t in tests)
    sandboxed = CodeReward(cpu_seconds=2)
    plain = CodeReward(cpu_seconds=2, bwrap="/nonexistent/bwrap", allow_unsandboxed=True)
    assert sandboxed.sandbox.sandboxed and not plain.sandbox.sandboxed
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} usable cores; "
          f"{args.programs} programs, {cases} tests; workers {sandboxed.sandbox.workers}")
    print("| runner | seconds | programs/s | tests/s |")
    print("|---|---|---|---|")
    results = {}
    for name, reward in (("bubblewrap sandbox", sandboxed), ("plain subprocess", plain)):
        seconds, verdicts = judged(reward, completions, tests)
        results[name] = verdicts
        print(f"| {name} | {seconds:.2f} | {args.programs / seconds:.1f} | {cases / seconds:.1f} |")
    same = results["bubblewrap sandbox"] == results["plain subprocess"]
    print(f"same verdicts: {same}; verdicts: {dict(sorted({v: results['plain subprocess'].count(v) for v in set(results['plain subprocess'])}.items()))}")


if __name__ == "__main__":
    main()
