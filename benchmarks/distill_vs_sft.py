"""On-policy distillation (`r1distill distill`) against SFT on the teacher's own samples (`r1distill sft`):
training tokens per second of a step, and how close each student gets to the teacher for the same
number of student tokens.

Teacher: the embedded SmolLM2-135M-Instruct. Student: a small random Llama with the same tokenizer
(--hidden, --layers), the same starting weights for both runs. Prompts: `r1distill synth arithmetic`.

- distill: `--steps` steps of --batch prompts; the student writes a completion of at most --tokens
  tokens per prompt, the teacher scores every token (reverse KL, beta 1).
- sft: the teacher samples one completion of --tokens tokens (temperature 1, no early stop) for
  --steps x --batch of the same prompts, untimed, and the student is fine-tuned on them for the same
  steps, batch and learning rate (no packing: one sample per row, as distill has one completion per prompt).

Both go through the real stages (`plan_run`, `build_trainer`, `trainer.train()`), one after the other
in one process. Then, on --held-out other prompts, with each trained student prompted by its own saved
template: the reverse KL (student || teacher) on the student's own samples, what distill minimises,
and the forward KL (teacher || student) on the teacher's samples, what SFT minimises, per token in nats.

    python benchmarks/distill_vs_sft.py [--steps 8] [--batch 4] [--tokens 32] [--hidden 64] [--layers 2] [--lr 1e-3]
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


def _student(folder: Path, teacher: str, hidden: int, layers: int) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(teacher)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=1, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _problems(folder: Path, count: int, seed: int) -> list[str]:
    from r1distill.synth.run import SynthConfig, synth

    path = folder / f"problems-{seed}.jsonl"
    synth(SynthConfig(task="arithmetic", output=str(path), n=count, seed=seed))
    return [json.loads(line)["problem"] for line in path.read_text().splitlines()]


def _user_turn(problem: str) -> list[dict]:
    from r1distill.prompts import build_messages

    return build_messages(problem, "chat", None, None)


def _encode(tokenizer, problems: list[str]):
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(_user_turn(p), tokenize=False, add_generation_prompt=True) for p in problems]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _sample(model, tokenizer, problems: list[str], tokens: int, seed: int):
    """(sequences, attention mask) of one sampled completion of exactly `tokens` tokens per problem."""
    import torch

    encoded = _encode(tokenizer, problems)
    torch.manual_seed(seed)
    with torch.no_grad():
        sequences = model.generate(**encoded, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=1.0, top_k=0,
                                   pad_token_id=tokenizer.pad_token_id)
    mask = torch.cat([encoded["attention_mask"], torch.ones(len(problems), tokens, dtype=torch.long)], dim=1)
    return sequences, mask


def _kl(p_model, q_model, sequences, mask, tokens: int) -> float:
    """Mean over the completion positions of KL(p || q) between the two models' next-token distributions."""
    import torch

    with torch.no_grad():
        p = p_model(sequences, attention_mask=mask).logits[:, -tokens - 1:-1].float().log_softmax(-1)
        q = q_model(sequences, attention_mask=mask).logits[:, -tokens - 1:-1].float().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean().item()


def _distances(student_dir: str, teacher, problems: list[str], tokens: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    own = _sample(student, tokenizer, problems, tokens, seed=1)
    theirs = _sample(teacher, tokenizer, problems, tokens, seed=2)
    return {"reverse_kl": _kl(student, teacher, *own, tokens), "forward_kl": _kl(teacher, student, *theirs, tokens)}


def _distill(prompts: Path, out: Path, student: str, teacher: str, args) -> dict:
    from r1distill.onpolicy.config import DistillConfig
    from r1distill.onpolicy.run import build_trainer, plan_run

    cfg = DistillConfig(str(prompts), str(out), teacher=teacher, model=student, max_steps=args.steps, batch_size=args.batch, grad_accum=1,
                        max_completion_length=args.tokens, lr=args.lr, logging_steps=1, save_steps=10**6, seed=0)
    trainer = build_trainer(plan_run(cfg))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(out))
    logged = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = sum(h["completions/mean_length"] for h in logged) * args.batch
    return {"stage": "distill", "steps": trainer.state.global_step, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def _sft(rows: Path, out: Path, student: str, args) -> dict:
    from r1distill.distill.config import SFTConfig
    from r1distill.distill.run import build_trainer, plan_run

    cfg = SFTConfig(str(rows), str(out), model=student, max_length=512, packing=False, batch_size=args.batch, grad_accum=1, epochs=1,
                    lr=args.lr, lr_scheduler="constant", warmup_ratio=0, logging_steps=1, save_steps=10**6, seed=0)
    plan = plan_run(cfg)
    trainer = build_trainer(plan)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(out))
    tokens = plan.stats.trained_tokens
    return {"stage": "sft", "steps": trainer.state.global_step, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per prompt")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the random student")
    parser.add_argument("--layers", type=int, default=2, help="layers of the random student")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--held-out", type=int, default=16, help="prompts the distances are measured on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1distill.models import resolve

    torch.set_num_threads(os.cpu_count() or 1)
    teacher_dir = resolve("smollm2-135m")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        student = _student(tmp / "student", teacher_dir, args.hidden, args.layers)
        problems = _problems(tmp, args.steps * args.batch, seed=0)
        held_out = _problems(tmp, args.held_out, seed=1)
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"problem": p}) + "\n" for p in problems))
        # The teacher's own samples of the same prompts, as `generate` would give them to sft (untimed).
        tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        sequences, _ = _sample(teacher, tokenizer, problems, args.tokens, seed=3)
        completions = tokenizer.batch_decode(sequences[:, -args.tokens:], skip_special_tokens=True)
        rows = tmp / "teacher-samples.jsonl"
        rows.write_text("".join(json.dumps({"messages": [*_user_turn(p), {"role": "assistant", "content": c}]}) + "\n" for p, c in zip(problems, completions)))
        start = _distances(student, teacher, held_out, args.tokens)
        results = [_distill(prompts, tmp / "distill", student, teacher_dir, args), _sft(rows, tmp / "sft", student, args)]
        for result, folder in zip(results, ("distill", "sft")):
            result.update(_distances(str(tmp / folder), teacher, held_out, args.tokens))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'}), "
          f"Python {platform.python_version()}; teacher SmolLM2-135M-Instruct, student random Llama {args.layers}x{args.hidden}; "
          f"{args.steps} steps x {args.batch} prompts, {args.tokens}-token completions, lr {args.lr:g}, {args.held_out} held-out prompts")
    print("| stage | steps | student tokens trained | train seconds | tokens/s | reverse KL (student samples) | forward KL (teacher samples) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| start | 0 | 0 | - | - | {start['reverse_kl']:.3f} | {start['forward_kl']:.3f} |")
    for r in results:
        print(f"| {r['stage']} | {r['steps']} | {r['tokens']:,.0f} | {r['seconds']:.1f} | {r['tokens_per_s']:,.0f} | {r['reverse_kl']:.3f} | {r['forward_kl']:.3f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
