"""Pass@1 on held-out prompts while a model trains (`--eval-every N --eval-prompts FILE`): sft, rl, distill.

A training loss, or a reward on the prompts being trained on, does not say whether the model solves
problems it has not seen; R1-style runs watch accuracy on held-out prompts as they go, to stop early or
pick a checkpoint. Every N optimizer steps, and after the last, the model being trained answers each
held-out prompt once, greedily, rendered as the stage itself prompts (its installed chat template, or
R1-Zero's raw text), and the same accuracy check filter, rl and eval use (Math-Verify in the verifier's
worker processes) scores the answers. One line goes to OUT/metrics.jsonl beside the trainer's:

    {"step": 20, "eval_pass@1": 0.42, "eval_pass@1_stderr": 0.05, "eval_format": 0.9, "eval_tokens": 311.5, "eval_prompts": 100}

so the report draws held-out pass@1 over steps. Prompts whose gold the verifier cannot read (None
verdicts) are left out of the share and counted in `eval_unscored`. Under several processes each rank
answers its share of the prompts (every rank must take part in a generation under ZeRO-3), and the main
process gathers the answers, scores them and writes the line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from transformers import TrainerCallback

from r1distill.backends import ends_inside_think
from r1distill.data import TEXT, VALUE, check_columns, read_table
from r1distill.errors import UsageError
from r1distill.rewards import Accuracy, judge_format
from r1distill.schema import ANSWER, FINISH_LENGTH, FINISH_STOP, PROBLEM, canonical_completion
from r1distill.training.callbacks import append_metrics

log = logging.getLogger(__name__)

_BATCH = 8
"""Prompts generated together: a few, so the longest answer of a batch does not hold many others back."""


@dataclass(frozen=True)
class HeldOut:
    """The held-out prompts, rendered as the stage prompts, and their gold answers."""

    prompts: list[str]
    golds: list[str]


def load_held_out(path: str, render: Callable[[str], str]) -> HeldOut:
    """The `--eval-prompts` table (`problem` and `answer` columns) with each problem rendered by `render`;
    UsageError naming the option for anything unusable, before any weight loads."""
    try:
        frame = read_table(path, text_column=PROBLEM)
    except UsageError as err:
        raise UsageError(f"--eval-prompts {err}") from err
    missing = [column for column in (PROBLEM, ANSWER) if column not in frame.columns]
    if missing:
        raise UsageError(f"--eval-prompts {path}: no column(s) {', '.join(missing)} (columns: {', '.join(frame.columns) or 'none'}); give a prompt table with problems and gold answers")
    check_columns(frame.schema, {PROBLEM: TEXT, ANSWER: VALUE}, f"--eval-prompts {path}")
    frame = frame.filter(pl.col(PROBLEM).is_not_null() & pl.col(ANSWER).is_not_null())
    if frame.height == 0:
        raise UsageError(f"--eval-prompts {path}: no row has both a problem and an answer")
    return HeldOut([render(problem) for problem in frame[PROBLEM].to_list()], [str(gold) for gold in frame[ANSWER].to_list()])


class HeldOutEval(TrainerCallback):
    """Scores pass@1 on `held_out` every `every` optimizer steps and after the last (see the module docstring).

    `mode` is the accuracy mode (math, choice, exact) and `layout` the format check's (r1, r1-zero).
    """

    def __init__(self, held_out: HeldOut, tokenizer, *, every: int, max_tokens: int, output: str | Path, mode: str = "math", layout: str = "r1") -> None:
        self.held_out = held_out
        self.tokenizer = tokenizer
        self.every = every
        self.max_tokens = max_tokens
        self.output = output
        self.layout = layout
        self.accuracy = Accuracy(mode=mode)
        self.done_at: int | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if (state.global_step % self.every == 0 or last) and state.global_step != self.done_at:
            self.done_at = state.global_step
            self.evaluate(model, state)

    def on_train_end(self, args, state, control, **kwargs):
        self.accuracy.close()

    def evaluate(self, model, state) -> None:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        mine = list(range(rank, len(self.held_out.prompts), world))
        answers = dict(zip(mine, self._answer(model, [self.held_out.prompts[i] for i in mine])))
        if distributed:
            gathered: list[dict | None] = [None] * world
            dist.all_gather_object(gathered, answers)
            answers = {i: answer for part in gathered for i, answer in (part or {}).items()}
        if state.is_world_process_zero:
            record = {"step": state.global_step, **self._scores([answers[i] for i in range(len(self.held_out.prompts))])}
            append_metrics(self.output, record)
            log.info("step %d: held-out pass@1 %.3f on %d prompts", state.global_step, record["eval_pass@1"], record["eval_prompts"])

    def _answer(self, model, prompts: list[str]) -> list[tuple[str, str, int]]:
        """(canonical completion, finish reason, tokens) of each prompt, greedy, in eval mode."""
        import torch

        tokenizer = self.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"  # the prompts end where generation starts
        training = model.training
        model.eval()
        out = []
        try:
            stops = _stop_ids(model, tokenizer)
            with torch.no_grad():
                for start in range(0, len(prompts), _BATCH):
                    batch = prompts[start:start + _BATCH]
                    encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                    generated = model.generate(
                        **encoded, max_new_tokens=self.max_tokens, do_sample=False, use_cache=True,
                        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                    )[:, encoded["input_ids"].shape[1]:]
                    for prompt, ids in zip(batch, generated.tolist()):
                        ends = [i for i, token in enumerate(ids) if token in stops]
                        kept = ids[:ends[0]] if ends else [t for t in ids if t != tokenizer.pad_token_id]
                        text = tokenizer.decode(kept, skip_special_tokens=True)
                        out.append((canonical_completion(text, prefilled_think=ends_inside_think(prompt)), FINISH_STOP if ends else FINISH_LENGTH, len(kept)))
        finally:
            tokenizer.padding_side = side
            model.train(training)
        return out

    def _scores(self, answers: list[tuple[str, str, int]]) -> dict:
        completions = [text for text, _, _ in answers]
        verdicts = self.accuracy.judge(completions, answer=self.held_out.golds, finish_reason=[reason for _, reason, _ in answers])
        scored = [v.score for v in verdicts if v.score is not None]
        passed = sum(scored) / len(scored) if scored else 0.0
        formatted = judge_format(completions, layout=self.layout)
        return {
            "eval_pass@1": passed,
            "eval_pass@1_stderr": math.sqrt(passed * (1 - passed) / len(scored)) if scored else None,
            "eval_format": sum(v.score for v in formatted) / len(formatted),
            "eval_tokens": sum(tokens for _, _, tokens in answers) / len(answers),
            "eval_prompts": len(answers),
            "eval_unscored": len(answers) - len(scored),
        }


def _stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the tokenizer's EOS and the generation config's (the end-of-turn token)."""
    configured = model.generation_config.eos_token_id
    ids = {tokenizer.eos_token_id, *([] if configured is None else [configured] if isinstance(configured, int) else configured)}
    return {token for token in ids if token is not None}


def held_out_callbacks(cfg, held_out: HeldOut | None, tokenizer, *, mode: str = "math", layout: str = "r1") -> list[HeldOutEval]:
    """The stage's held-out callback when --eval-every is given (`cfg`: its TrainingSettings), else none."""
    if held_out is None or cfg.eval_every is None:
        return []
    return [HeldOutEval(held_out, tokenizer, every=cfg.eval_every, max_tokens=cfg.eval_max_tokens, output=cfg.output, mode=mode, layout=layout)]
