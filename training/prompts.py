"""The prompts an on-policy trainer samples from (rl's GRPO, distill's student): read, checked and turned into the rows TRL takes.

Any prompt-set table works: a prompt table (`problem`, `answer`), a `r1distill filter` output (its
reasoning rows carry `problem`, `answer` and the prompt's `pass_rate`), or a `generate` output (one
row per sample). Each prompt becomes one row (by `prompt_id`, else by problem text).

The rows handed to the trainer hold `prompt` and only the columns the rewards read (the gold
`answer`, countdown's `numbers` and `target`...). TRL passes every dataset column to every reward, so
a trace column of the input (`finish_reason`, `completion_tokens`, `reasoning`...) would otherwise
describe the teacher's completion instead of the policy's; what a reward learns about the policy's
completion comes from the policy (see rl/rewards.py). distill needs no column but `problem`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from r1distill.data import read_table
from r1distill.errors import UsageError
from r1distill.prompts import build_messages
from r1distill.schema import ANSWER, KIND_NON_REASONING, PASS_RATE, PROBLEM, PROMPT_ID

log = logging.getLogger(__name__)


@dataclass
class PromptStats:
    """How the input became the prompts trained on."""

    rows_in: int
    prompts: int
    """Distinct prompts among the input rows."""
    no_answer: int
    """Prompts dropped because a reward needs their gold answer and they have none."""
    outside_band: int
    """Prompts dropped by --min-pass-rate/--max-pass-rate (or without a pass rate while a band is given)."""
    kept: int

    def line(self) -> str:
        return (
            f"{self.rows_in:,} rows in, {self.prompts:,} prompts; {self.no_answer:,} dropped without an answer, "
            f"{self.outside_band:,} outside the pass-rate band; {self.kept:,} prompts to train on"
        )


def load_prompt_set(source: str, split: str, needed: list[str], min_pass_rate: float | None, max_pass_rate: float | None):
    """(one dict per prompt with `problem` and the `needed` columns, PromptStats); UsageError on unusable input."""
    frame = read_table(source, split, text_column=PROBLEM)
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty; give a prompt set with at least one row")
    if PROBLEM not in frame.columns:
        raise UsageError(f"{source}: no '{PROBLEM}' column (columns: {', '.join(frame.columns)}); give a prompt table, a filter output or a generate output")
    if frame[PROBLEM].dtype != pl.String:
        raise UsageError(f"{source}: column '{PROBLEM}' must hold text, it holds {frame[PROBLEM].dtype}")
    rows_in = frame.height
    if "kind" in frame.columns:  # a filter output: its non-reasoning chats are no prompts with answers
        frame = frame.filter(pl.col("kind") != KIND_NON_REASONING)
    frame = frame.filter(pl.col(PROBLEM).is_not_null() & (pl.col(PROBLEM).str.strip_chars() != ""))
    key = PROMPT_ID if PROMPT_ID in frame.columns else PROBLEM
    frame = frame.unique(key, keep="first", maintain_order=True)
    prompts = frame.height
    missing = [c for c in needed if c not in frame.columns]
    if ANSWER in missing:
        raise UsageError(f"{source}: no '{ANSWER}' column, and the accuracy (or arithmetic) reward needs the gold answer; give a table with answers or drop that reward")
    if missing:
        raise UsageError(f"{source}: no column(s) {', '.join(missing)}, which the chosen rewards read (columns: {', '.join(frame.columns)})")
    no_answer = 0
    if ANSWER in needed:
        has_answer = pl.col(ANSWER).is_not_null() & (pl.col(ANSWER).cast(pl.String).str.strip_chars() != "")
        no_answer = frame.height - frame.filter(has_answer).height
        if no_answer == frame.height:
            raise UsageError(f"{source}: no row has an '{ANSWER}', and the accuracy (or arithmetic) reward needs the gold answer")
        frame = frame.filter(has_answer).with_columns(pl.col(ANSWER).cast(pl.String))
    outside = 0
    if min_pass_rate is not None or max_pass_rate is not None:
        if PASS_RATE not in frame.columns:
            raise UsageError(f"{source}: no '{PASS_RATE}' column for --min-pass-rate/--max-pass-rate; run `r1distill filter` on traces of these prompts first")
        band = pl.col(PASS_RATE).is_not_null()
        if min_pass_rate is not None:
            band &= pl.col(PASS_RATE) >= min_pass_rate
        if max_pass_rate is not None:
            band &= pl.col(PASS_RATE) <= max_pass_rate
        outside = frame.height - frame.filter(band).height
        frame = frame.filter(band)
    if frame.height == 0:
        raise UsageError(f"{source}: no prompt is left ({no_answer} without an answer, {outside} outside the pass-rate band); widen the band or give more prompts")
    stats = PromptStats(rows_in, prompts, no_answer, outside, frame.height)
    return frame.select(PROBLEM, *needed).to_dicts(), stats


def trainer_rows(rows: list[dict], template: str, system: str | None) -> list[dict]:
    """The rows TRL takes: `prompt` as raw text (r1-zero, no chat template) or chat messages, then the columns
    the rewards read. The messages are those `generate` sends, so a policy is trained on the prompts its
    traces came from."""
    out = []
    for row in rows:
        messages = build_messages(row[PROBLEM], template, system, None)
        prompt = messages[0]["content"] if template == "r1-zero" else messages
        out.append({"prompt": prompt, **{k: v for k, v in row.items() if k != PROBLEM}})
    return out


def rendered_prompt(tokenizer, problem: str, template: str, system: str | None) -> str:
    """A problem as a trained model sees it: the trainer's prompt (raw R1-Zero text, or chat messages through
    the tokenizer's chat template with its generation prompt) as text, for held-out evaluation."""
    prompt = trainer_rows([{PROBLEM: problem}], template, system)[0]["prompt"]
    return prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
