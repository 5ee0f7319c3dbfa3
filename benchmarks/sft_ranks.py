"""`r1distill sft` tokens/s in one process against two processes under `accelerate launch` (gloo, CPU).

What it measures: the cost of data parallelism itself on one machine (gradient all-reduce over gloo,
the shared-data hand-over of training/ranks.py, the cores split between the ranks), not a speed-up a
GPU run would see. Both runs train the same rows with the same global batch (one process x B against
two x B/2), the same steps and settings, through the real command line; tokens/s is TRL's global
`num_tokens` over the trainer's runtime (metrics.jsonl), and the wall time includes start-up.

Rows are MATH-500's problems (../shared/data/benchmarks/math500_test.jsonl, never copied into the
repository) with their worked solution as the thinking; the student is a small random Llama with the
SmolLM2 tokenizer.

    python benchmarks/sft_ranks.py [--rows 64] [--steps 8] [--batch-size 4] [--max-length 512]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_packing import DEFAULT_DATA, _rows, _tiny_student  # noqa: E402  (the same rows and student as the packing benchmark)


def _launcher(processes: int) -> list[str]:
    """How the stage is started: plainly for one process; for two, accelerate's multi-GPU launcher, which
    ACCELERATE_USE_CPU turns into CPU ranks over gloo (accelerate's MULTI_CPU type means mpirun)."""
    if processes == 1:
        return [sys.executable]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]


def _measure(data: Path, model: str, out: Path, processes: int, batch_size: int, steps: int, max_length: int) -> dict:
    command = [*_launcher(processes), "-m", "r1distill.cli", "sft", str(data), "-o", str(out), "--model", model,
               "--max-length", str(max_length), "--batch-size", str(batch_size // processes), "--grad-accum", "1", "--max-steps", str(steps),
               "--warmup-ratio", "0", "--logging-steps", "1", "--save-steps", str(10**6), "--seed", "0"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{result.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tokens = max(m["num_tokens"] for m in metrics if "num_tokens" in m)
    runtime = next(m["train_runtime"] for m in metrics if "train_runtime" in m)
    loss = [m["loss"] for m in metrics if "loss" in m]
    return {"processes": processes, "batch": batch_size // processes, "steps": steps, "tokens": tokens, "train_seconds": runtime,
            "wall_seconds": wall, "tokens_per_s": tokens / runtime, "last_loss": loss[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="global batch: packed sequences per step, split between the processes")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    parser.add_argument("--layers", type=int, default=4, help="layers of the random Llama")
    args = parser.parse_args()
    if args.batch_size % 2:
        parser.error("--batch-size must be even: two processes take half each")
    logging.basicConfig(level=logging.WARNING)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "rows.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in _rows(args.data, args.rows)))
        model = _tiny_student(tmp / "student", args.hidden, args.layers)
        results = [_measure(data, model, tmp / f"out-{n}", n, args.batch_size, args.steps, args.max_length) for n in (1, 2)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()}, {cores} usable cores, torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'}), "
          f"Python {platform.python_version()}; random Llama {args.layers}x{args.hidden}; {args.rows} MATH-500 rows, --max-length {args.max_length}, "
          f"global batch {args.batch_size}, {args.steps} steps")
    print("| processes | batch per process | tokens | train seconds | wall seconds | tokens/s | last loss |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['processes']} | {r['batch']} | {r['tokens']:,.0f} | {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['tokens_per_s']:,.0f} | {r['last_loss']:.4f} |")
    one, two = results
    print(f"two processes: {two['tokens_per_s'] / one['tokens_per_s']:.2f}x the tokens/s of one")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
