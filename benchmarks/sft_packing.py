"""Training throughput of `r1distill sft` with packing on and off, and the share of padding tokens.

Claims (issue 9): with packing (the default: TRL's best-fit packing, padding-free) the padding share
is under 5% and the trained (assistant) tokens per second are at least 1.5x those without packing,
where each batch of samples is padded to its longest one.

Rows are MATH-500's problems (../shared/data/benchmarks/math500_test.jsonl, never copied into the
repository) with their worked solution as the assistant's thinking and the boxed answer after it,
so the lengths have the long tail of real solutions. Both runs go through the real stage
(`plan_run`, `build_trainer`, `trainer.train()`, one epoch over the same rows) side by side in one
process; the student is a small random Llama with the SmolLM2 tokenizer (or --model).

    python benchmarks/sft_packing.py [--rows 64] [--max-length 1024] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks" / "math500_test.jsonl"


def _rows(data: Path, count: int) -> list[dict]:
    from r1distill.schema import r1_layout

    rows = []
    for line in data.read_text(encoding="utf-8").splitlines()[:count]:
        record = json.loads(line)
        answer = r1_layout(record["solution"], f"The answer is $\\boxed{{{record['answer']}}}$.")
        rows.append({"messages": [{"role": "user", "content": record["problem"]}, {"role": "assistant", "content": answer}]})
    return rows


def _tiny_student(folder: Path, hidden: int, layers: int) -> str:
    """A random Llama of the given size with SmolLM2's real tokenizer (from the embedded model's folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from r1distill.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64), max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _measure(data: Path, model: str, out: Path, packing: bool, batch_size: int, max_length: int) -> dict:
    from r1distill.distill.config import SFTConfig
    from r1distill.distill.run import build_trainer, plan_run

    cfg = SFTConfig(
        str(data), str(out), model=model, max_length=max_length, packing=packing, batch_size=batch_size, grad_accum=1, epochs=1,
        warmup_ratio=0, logging_steps=10**6, save_steps=10**6, seed=0,
    )
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    positions = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "packing": packing,
        "batch_size": batch_size,
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "trained_tokens": plan.stats.trained_tokens,
        "tokens": plan.stats.tokens,
        "positions": positions,
        "padding_share": 1 - plan.stats.tokens / positions,
        "trained_tokens_per_s": plan.stats.trained_tokens / seconds,
        "dropped": plan.stats.too_long,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--model", default=None, help="a model to train instead of the random Llama (e.g. smollm2-135m)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    parser.add_argument("--layers", type=int, default=4, help="layers of the random Llama")
    parser.add_argument("--unpacked-batch", type=int, default=8, help="samples per batch without packing (padded to the longest)")
    parser.add_argument("--packed-batch", type=int, default=2, help="packed sequences of --max-length tokens per batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "rows.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in _rows(args.data, args.rows)))
        model = args.model or _tiny_student(tmp / "student", args.hidden, args.layers)
        results = [
            _measure(data, model, tmp / "unpacked", False, args.unpacked_batch, args.max_length),
            _measure(data, model, tmp / "packed", True, args.packed_batch, args.max_length),
        ]
    off, on = results
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'}), "
          f"Python {platform.python_version()}; model {args.model or f'random Llama {args.layers}x{args.hidden}'}; "
          f"{args.rows} MATH-500 rows, --max-length {args.max_length} ({on['dropped']} dropped)")
    print("| packing | batch | steps | tokens in batches | padding share | seconds | trained tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {'on' if r['packing'] else 'off'} | {r['batch_size']} | {r['steps']} | {r['positions']:,} | {r['padding_share']:.1%} | "
              f"{r['seconds']:.1f} | {r['trained_tokens_per_s']:,.0f} |")
    print(f"packing speed-up: {on['trained_tokens_per_s'] / off['trained_tokens_per_s']:.2f}x trained tokens/s "
          f"({on['trained_tokens']:,} trained of {on['tokens']:,} tokens per epoch)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
