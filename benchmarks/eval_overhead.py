"""Eval overhead on top of generation: samples scored per second by `r1distill eval --completions`
against a naive loop of `math_verify.parse` / `verify`, side by side in one run.

Claim: scoring is never what an eval waits for. `r1distill eval` does more per sample than the naive
loop (answer extraction, maj@k vote classes, token counts are skipped without a tokenizer, Parquet and
results.json written), yet scores at least as many samples per second, with the same verdict on every
sample that loop finishes.

The samples are MATH-500's worked solutions (../shared/data/benchmarks/math500_test.jsonl, never
copied into the repository) in a think block followed by a boxed final answer in four forms per
problem, built by `filter_verify.build_traces` (the gold as written, re-spaced, an equivalent form, a
wrong one): 4 samples per problem, as `-n 4` gives.

    python benchmarks/eval_overhead.py [--data ../shared/data/benchmarks/math500_test.jsonl] [--copies 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from filter_verify import DEFAULT_DATA, build_traces, naive  # noqa: E402


def r1distill_eval(folder: Path, out: Path) -> tuple[float, dict[str, str]]:
    """Run `r1distill eval --completions` as a user would; returns samples/s (wall, start-up included) and verdicts."""
    rows = pl.scan_parquet(folder / "*.parquet").select(pl.len()).collect().item()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "r1distill.cli", "eval", "--completions", str(folder), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    scored = pl.read_parquet(out / "samples.parquet")
    return rows / elapsed, dict(zip(scored["id"], scored["verdict"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--copies", type=int, default=10, help="copies of MATH-500 (distinct prompts), 2,000 samples each")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found; pass --data with MATH-500's test.jsonl")
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        rows = build_traces(args.data, work / "traces", copies=args.copies)
        naive_rate, naive_verdicts = naive(work / "traces")
        rate, verdicts = r1distill_eval(work / "traces", work / "eval")
        differ = [i for i, correct in naive_verdicts.items() if (verdicts[i] == "correct") != correct]
        print(f"\n{rows:,} samples: MATH-500 x {args.copies} copies x 4 answers ({sum(naive_verdicts.values()):,} correct by the naive loop)\n")
        print("| scorer | samples/s | vs naive | same verdict as naive |")
        print("|---|---:|---:|---:|")
        print(f"| naive loop (parse + verify per sample, 1 process) | {naive_rate:,.0f} | 1.0x | - |")
        print(f"| r1distill eval --completions (whole command) | {rate:,.0f} | {rate / naive_rate:.1f}x | {len(naive_verdicts) - len(differ):,}/{len(naive_verdicts):,} |")
        for row_id in differ[:5]:
            print(f"  differs: {row_id}: r1distill {verdicts[row_id]}, naive {'correct' if naive_verdicts[row_id] else 'not correct'}")


if __name__ == "__main__":
    main()
