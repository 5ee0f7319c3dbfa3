"""Verification throughput of `r1distill filter` against a naive Math-Verify loop, and its peak memory.

Claims: on realistic traces `r1distill filter` verifies at least 3x as many rows per second as a loop
that calls `math_verify.parse` and `verify` row by row in one process, with the same verdict on every
row that loop finishes; an adversarial row costs at most the timeout; peak memory stays roughly flat
as the input grows 10x and 100x.

Traces are built from MATH-500's worked solutions (../shared/data/benchmarks/math500_test.jsonl,
never copied into the repository): each solution is wrapped in a think block and followed by a boxed
final answer in one of four forms per problem: the gold answer as written, the gold with spaces around it, an equivalent form where one exists (2 -> 2.0, a fraction -> a decimal), and a wrong answer.

    python benchmarks/filter_verify.py [--data ../shared/data/benchmarks/math500_test.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import polars as pl

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks" / "math500_test.jsonl"
ADVERSARIAL = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "{" * 500 + "1" + "}" * 500 + "}", "x" * 1_000_000]


def _variants(answer: str) -> list[str]:
    """Four final answers for one gold: as written, re-spaced, an equivalent form, and a wrong one."""
    equivalent, wrong = answer, "\\frac{1}{7}" if answer != "\\frac{1}{7}" else "3"
    try:
        value = Fraction(answer.replace(",", ""))
        equivalent = f"{float(value):.6g}" if value.denominator != 1 else f"{value.numerator}.0"
        wrong = str(value + 1)
    except ValueError:
        parts = answer.removeprefix("\\frac{").removesuffix("}").split("}{")
        if answer.startswith("\\frac{") and len(parts) == 2 and all(p.isdigit() for p in parts):
            equivalent = f"{int(parts[0]) / int(parts[1]):.6g}"
    return [answer, f" {answer} ", equivalent, wrong]


def build_traces(data: Path, folder: Path, copies: int = 1) -> int:
    problems = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    rows = []
    for copy in range(copies):
        for index, item in enumerate(problems):
            prompt_id = f"m{copy}-{index}"
            for sample, final in enumerate(_variants(item["answer"])):
                response = f"The final answer is \\boxed{{{final}}}."
                rows.append(
                    {
                        "id": f"{prompt_id}:{sample}", "prompt_id": prompt_id, "sample": sample,
                        "problem": f"{item['problem']} (copy {copy})" if copy else item["problem"], "answer": item["answer"],
                        "completion": f"<think>\n{item['solution']}\n</think>\n\n{response}", "reasoning": item["solution"],
                        "response": response, "finish_reason": "stop", "completion_tokens": len(item["solution"]) // 4,
                    }
                )
    folder.mkdir(parents=True, exist_ok=True)
    # Row groups of 1,000 rows, like the shards `r1distill generate` writes.
    pl.DataFrame(rows).write_parquet(folder / "traces.parquet", row_group_size=1000)
    return len(rows)


def naive(folder: Path) -> tuple[float, dict[str, bool]]:
    """The baseline: parse and verify row by row in this process, with Math-Verify's own timeouts."""
    import math_verify

    rows = pl.read_parquet(folder / "traces.parquet").select("id", "answer", "response").rows()
    started = time.perf_counter()
    verdicts = {}
    for row_id, gold, response in rows:
        verdicts[row_id] = bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(response)))
    return len(rows) / (time.perf_counter() - started), verdicts


def r1distill_filter(folder: Path, out: Path, checks: list[str]) -> tuple[float, float, dict[str, str]]:
    """Run `r1distill filter` as a user would; returns rows/s, peak RSS (MiB) and verdicts."""
    rows = pl.scan_parquet(folder / "*.parquet").select(pl.len()).collect().item()
    args = [sys.executable, "-m", "r1distill.cli", "filter", str(folder), "-o", str(out), "--dedup", "none"]
    for check in checks:
        args += ["--check", check]
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    scored = pl.read_parquet(out / "scored" / "*.parquet")
    verdicts = dict(zip(scored["id"], scored["accuracy_verdict"])) if "accuracy_verdict" in scored.columns else {}
    return rows / elapsed, peak, verdicts


def _peak_of_fresh_process(folder: Path, out: Path, checks: list[str]) -> tuple[float, float]:
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each size in its own interpreter.
    code = (
        "import sys, resource; sys.path.insert(0, sys.argv[1]); import filter_verify as b; from pathlib import Path; "
        "rate, peak, _ = b.r1distill_filter(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]); print(rate, peak)"
    )
    output = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(folder), str(out), *checks], check=True, capture_output=True, text=True)
    rate, peak = output.stdout.split()
    return float(rate), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--copies", type=int, default=10, help="copies of MATH-500 in the throughput comparison")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100], help="copies of MATH-500 in the memory runs")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found; pass --data with MATH-500's test.jsonl")
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        # Ten copies of MATH-500 x 4 answers: enough rows that start-up costs (interpreter, imports,
        # worker processes) do not decide the comparison; the copies are distinct prompts.
        rows = build_traces(args.data, work / "x10", copies=args.copies)
        naive_rate, naive_verdicts = naive(work / "x10")
        rate, _, verdicts = r1distill_filter(work / "x10", work / "out-accuracy", ["accuracy"])
        differ = [i for i, correct in naive_verdicts.items() if (verdicts[i] == "correct") != correct]
        print(f"\n{rows:,} rows: MATH-500 x {args.copies} copies x 4 answers ({sum(naive_verdicts.values()):,} correct by the naive loop)\n")
        print("| verifier | rows/s | vs naive | same verdict as naive |")
        print("|---|---:|---:|---:|")
        print(f"| naive loop (parse + verify per row, 1 process) | {naive_rate:,.0f} | 1.0x | - |")
        print(f"| r1distill filter --check accuracy | {rate:,.0f} | {rate / naive_rate:.1f}x | {len(naive_verdicts) - len(differ):,}/{len(naive_verdicts):,} |")
        rate_all, _, _ = r1distill_filter(work / "x10", work / "out-default", [])
        print(f"| r1distill filter (default checks) | {rate_all:,.0f} | {rate_all / naive_rate:.1f}x | - |")
        for row_id in differ[:5]:
            print(f"  differs: {row_id}: r1distill {verdicts[row_id]}, naive {'correct' if naive_verdicts[row_id] else 'not correct'}")

        adversarial = work / "adversarial"
        adversarial.mkdir()
        pl.DataFrame(
            [{"id": f"a{i}", "problem": f"adversarial {i}", "answer": "1", "completion": text, "response": text} for i, text in enumerate(ADVERSARIAL)]
        ).write_parquet(adversarial / "traces.parquet")
        started = time.perf_counter()
        _, _, verdicts = r1distill_filter(adversarial, work / "out-adversarial", ["accuracy"])
        print(f"\nadversarial rows ({len(ADVERSARIAL)}): {time.perf_counter() - started:.1f} s in all, verdicts {sorted(verdicts.values())}")

        print("\n| input | rows | rows/s | peak RSS (MiB) |")
        print("|---|---:|---:|---:|")
        checks = ["format", "language", "truncated", "repetition"]
        for size in args.sizes:
            folder = work / f"mem{size}"
            count = build_traces(args.data, folder, copies=size)
            rate, peak = _peak_of_fresh_process(folder, work / f"out-mem-{size}", checks)
            print(f"| {size}x | {count:,} | {rate:,.0f} | {peak:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
