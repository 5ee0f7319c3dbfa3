"""Reward throughput inside GRPO: r1distill's shared rewards as the trainer calls them, against Math-Verify
called directly in the trainer's thread, and the share of a CPU GRPO step spent in rewards.

Claims: scoring a GRPO batch with accuracy + format + language, r1distill's rewards (Math-Verify in
killable worker processes, cheap cases settled without SymPy, each gold parsed once for the run, while
the policy loads) score at least 3x as many completions per second inside the training steps as the
same rewards with accuracy computed by `math_verify.parse`/`verify` row by row in the trainer's thread,
with the same accuracy verdict on every completion; and rewards take under 10% of a GRPO step on CPU
with a tiny model. The table also gives the rate with golds parsed in the steps, and the rate that
counts the parsing ahead as if nothing overlapped it.

Completions are MATH-500's worked solutions wrapped as traces (../shared/data/benchmarks/math500_test.jsonl,
never copied into the repository): per problem a group of 8, two each of the gold answer as written,
re-spaced, in an equivalent form, and wrong (the forms of benchmarks/filter_verify.py), scored in
batches of 64 completions (8 prompts x 8 generations) as TRL calls a reward.

    python benchmarks/rl_rewards.py [--data ../shared/data/benchmarks/math500_test.jsonl] [--problems 500] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filter_verify import DEFAULT_DATA, _variants  # noqa: E402  (the same answer forms as the filter benchmark)

BATCH = 64
GENERATIONS = 8
END = 2  # a stop token id: the completions are finished


def completions(data: Path, problems: int) -> list[tuple[str, str]]:
    """(gold, completion) pairs, GENERATIONS per problem in a row, as a GRPO batch holds them."""
    items = [json.loads(line) for line in data.read_text().splitlines() if line.strip()][:problems]
    pairs = []
    for item in items:
        for final in _variants(item["answer"]) * (GENERATIONS // 4):
            pairs.append((item["answer"], f"<think>\n{item['solution']}\n</think>\n\nThe final answer is \\boxed{{{final}}}."))
    return pairs


def _timed_epochs(pairs: list[tuple[str, str]], epochs: int, score: Callable[[list[tuple[str, str]]], list]) -> tuple[list[float], list]:
    """Completions per second of `score` over the pairs in batches of BATCH, per epoch; and the accuracy
    scores it returned in the last epoch."""
    rates = []
    for _ in range(epochs):
        accuracy_scores = []
        started = time.perf_counter()
        for start in range(0, len(pairs), BATCH):
            accuracy_scores += score(pairs[start : start + BATCH])
        rates.append(len(pairs) / (time.perf_counter() - started))
    return rates, accuracy_scores


def r1distill_rewards(pairs: list[tuple[str, str]], prepare: bool, epochs: int = 1) -> tuple[list[float], float, list[float | None]]:
    """Completions per second through rl's PolicyReward wrappers of the shared rules, per pass over the
    pairs (an epoch), the seconds spent parsing the golds ahead (`prepare`, what rl does while the
    policy loads), and the accuracy scores of the last pass."""
    from r1distill.rewards import rule
    from r1distill.rl.rewards import PolicyReward, Rollouts

    with rule("accuracy") as accuracy:
        rollouts = Rollouts()
        rewards = [PolicyReward(r, {END}, False, rollouts, first=i == 0) for i, r in enumerate([accuracy, rule("format"), rule("language")])]
        accuracy._verifier()  # the workers start with the trainer, before the first step
        started = time.perf_counter()
        if prepare:
            accuracy.prepare([gold for gold, _ in pairs])
        prepared = time.perf_counter() - started

        def score(batch: list[tuple[str, str]]) -> list[float | None]:
            chat = [[{"role": "assistant", "content": text}] for _, text in batch]
            ids = [[1, END]] * len(batch)
            answers = [gold for gold, _ in batch]
            scores = [reward(prompts=["q"] * len(batch), completions=chat, completion_ids=ids, answer=answers) for reward in rewards]
            return scores[0]

        rates, accuracy_scores = _timed_epochs(pairs, epochs, score)
        return rates, prepared, accuracy_scores


def naive_rewards(pairs: list[tuple[str, str]], epochs: int) -> tuple[list[float], list[float]]:
    """The baseline, per pass over the pairs: the same format and language rules, accuracy by
    Math-Verify row by row in this thread; and the accuracy scores of the last pass."""
    import math_verify

    from r1distill.rewards import rule
    from r1distill.rewards.text import answer_region

    format_, language = rule("format"), rule("language")

    def score(batch: list[tuple[str, str]]) -> list[float]:
        texts = [text for _, text in batch]
        accuracy = [float(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(answer_region(text)))) for gold, text in batch]
        format_(texts), language(texts)
        return accuracy

    return _timed_epochs(pairs, epochs, score)


def time_rewards(trainer) -> list[float]:
    """Wrap the trainer's reward functions so that each call's seconds add up in the returned one-item list."""
    spent = [0.0]

    def timed(reward: Callable) -> Callable:
        def call(**kwargs):
            started = time.perf_counter()
            try:
                return reward(**kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        call.__name__ = reward.__name__
        return call

    trainer.reward_funcs = [timed(r) for r in trainer.reward_funcs]
    return spent


def step_share(data: Path, steps: int) -> tuple[float, float, float]:
    """(seconds per GRPO step, seconds in rewards per step, mean completion tokens) of a real CPU run with a
    2-layer random Llama on MATH-500 prompts, rewards accuracy + format + language."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from r1distill import models
    from r1distill.rl.config import RLConfig
    from r1distill.rl.run import build_trainer, plan_run

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        tokenizer = AutoTokenizer.from_pretrained(models.resolve("smollm2-135m"))
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(work / "tiny")
        tokenizer.save_pretrained(work / "tiny")
        cfg = RLConfig(str(data), str(work / "out"), model=str(work / "tiny"), rewards=["accuracy", "format", "language"], num_generations=GENERATIONS,
                       batch_size=16, max_completion_length=256, max_steps=steps, save_steps=10**6)
        trainer = build_trainer(plan := plan_run(cfg))
        spent = time_rewards(trainer)
        started = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - started
        for rule in plan.rules:
            rule.close()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
        return elapsed / steps, spent[0] / steps, sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--problems", type=int, default=500, help="MATH-500 problems (x 8 completions each)")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps of the step-share run")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found; pass --data with MATH-500's test.jsonl")
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    pairs = completions(args.data, args.problems)
    (naive, naive_again), naive_scores = naive_rewards(pairs, epochs=2)
    print(f"\n{len(pairs):,} completions: MATH-500 x {GENERATIONS} (4 answer forms x 2), batches of {BATCH}; accuracy + format + language\n")
    print("| scorer | golds parsed ahead (s) | completions/s in the steps | vs naive | counting the parsing ahead | same accuracy verdict as naive |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| Math-Verify parse + verify in the trainer's thread | - | {naive:,.0f} | 1.0x | 1.0x | - |")
    print(f"| the same, a second epoch | - | {naive_again:,.0f} | 1.0x | 1.0x | - |")
    (cold, again), _, our_scores = r1distill_rewards(pairs, prepare=False, epochs=2)
    (ahead,), prepared, ahead_scores = r1distill_rewards(pairs, prepare=True)
    for label, ours, baseline, before, scores in (("golds parsed in the steps", cold, naive, 0.0, our_scores),
                                                  ("a second epoch (golds parsed in the first)", again, naive_again, 0.0, our_scores),
                                                  ("golds parsed while the policy loads", ahead, naive, prepared, ahead_scores)):
        same = sum((a == 1.0) == (b == 1.0) for a, b in zip(scores, naive_scores))
        overall = len(pairs) / (len(pairs) / ours + before)
        print(f"| r1distill rl rewards, {label} | {before:.2f} | {ours:,.0f} | {ours / baseline:.1f}x | {overall / baseline:.1f}x | {same:,}/{len(pairs):,} |")
    step, rewards, length = step_share(args.data, args.steps)
    print(f"\nGRPO on CPU, 2-layer random Llama, 16 completions per step (2 prompts x {GENERATIONS}), at most 256 tokens:")
    print(f"{step:.2f} s per step, {rewards:.3f} s of it in rewards ({100 * rewards / step:.1f}%), {length:.0f} completion tokens on average")
    print(f"a batch of 16 MATH-500 traces, golds parsed in the step, would take {16 / cold:.3f} s to score ({100 * 16 / cold / step:.1f}% of that step)")


if __name__ == "__main__":
    main()
