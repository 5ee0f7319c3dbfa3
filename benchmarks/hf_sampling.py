"""Decode cost of the transformers backend's sampling: transformers' own top-p against NucleusSampler.

The embedded SmolLM2-135M samples the same prompts (the quickstart's kind, a `<think>` opened) at
temperature 0.7 and top-p 0.95, both ways in one run and at each batch size: transformers' warpers
and multinomial draw (`do_sample=True`), and backends.hf.NucleusSampler, which the backend uses. A
decode step's time is (time for 1 + N new tokens - time for 1) / N, so the prompt's prefill is left
out; every row is made to run the N tokens (`min_new_tokens`).

    python benchmarks/hf_sampling.py [--batch-sizes 16,64] [--tokens 24]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1distill.backends.hf import NucleusSampler
from r1distill.models import resolve

TEMPERATURE, TOP_P = 0.7, 0.95


def prompts(tokenizer, count: int) -> list[str]:
    messages = [[{"role": "user", "content": f"Compute {i % 9 + 1} * {i * 7 % 9 + 1}\nPlease reason step by step."}] for i in range(count)]
    return [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) + "<think>\n" for m in messages]


def seconds(model, encoded, new_tokens: int, ours: bool) -> float:
    options = {"logits_processor": [NucleusSampler(TEMPERATURE, TOP_P)], "do_sample": False} if ours else {"do_sample": True, "temperature": TEMPERATURE, "top_p": TOP_P}
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens, top_k=None, pad_token_id=0, **options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    path = resolve("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| batch | sampling | decode step | tokens/s |")
    print("| ---: | --- | ---: | ---: |")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        encoded = tokenizer(prompts(tokenizer, batch), return_tensors="pt", padding=True, add_special_tokens=False)
        seconds(model, encoded, 2, ours=True)  # warm-up
        for ours, name in [(False, "transformers (warpers, multinomial)"), (True, "NucleusSampler")]:
            step = (seconds(model, encoded, 1 + args.tokens, ours) - seconds(model, encoded, 1, ours)) / args.tokens
            print(f"| {batch} | {name} | {step * 1000:.0f} ms | {batch / step:.0f} |")


if __name__ == "__main__":
    main()
