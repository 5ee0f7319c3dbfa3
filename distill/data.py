"""Training conversations: read and checked before any model loads, then tokenized once with the chosen template.

Every row becomes `messages` (role/content turns with at least one assistant turn). A `r1distill filter`
output has them; a prompt/completion table (a `generate` output, say) is turned into them. A row is
reasoning when its last assistant turn holds a non-empty think block (what filter calls `kind`).

Samples longer than --max-length are dropped and counted rather than cut mid-thought: a cut trace
teaches the student to stop thinking without an answer. The tokenized rows carry `assistant_masks`,
from which TRL builds labels that train the assistant turns only, before it packs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from r1distill.data import read_table
from r1distill.errors import UsageError
from r1distill.schema import KIND_NON_REASONING, KIND_REASONING, MESSAGES_COLUMN, split_reasoning

ROLES = ("system", "user", "assistant")


def load_conversations(source: str, split: str = "train") -> tuple[list[list[dict]], list[str]]:
    """(messages per row, kind per row) of `source`; a one-line UsageError names the first bad row."""
    frame = read_table(source, split)
    if frame.height == 0:
        raise UsageError(f"{source}: the table is empty; give a dataset with at least one conversation")
    if MESSAGES_COLUMN in frame.columns:
        conversations = frame[MESSAGES_COLUMN].to_list()
    elif "prompt" in frame.columns and "completion" in frame.columns:
        conversations = [_from_prompt_completion(p, c) for p, c in zip(frame["prompt"].to_list(), frame["completion"].to_list())]
    else:
        raise UsageError(
            f"{source}: no 'messages' column and no 'prompt' and 'completion' columns (columns: {', '.join(frame.columns)}); "
            "give a `r1distill filter` output or a table of chat messages"
        )
    for row, messages in enumerate(conversations):
        problem = _malformed(messages)
        if problem:
            raise UsageError(f"{source}: row {row} of '{MESSAGES_COLUMN}' {problem}")
    return conversations, [conversation_kind(messages) for messages in conversations]


def _from_prompt_completion(prompt, completion) -> list[dict] | None:
    """A prompt (text or messages) and a completion (text or messages) as one conversation."""
    if prompt is None or completion is None:
        return None
    head = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    tail = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return head + tail


def _malformed(messages) -> str | None:
    """What is wrong with one conversation, or None."""
    if not isinstance(messages, list) or not messages:
        return "is empty or not a list of {role, content} turns"
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"turn {turn} is not a {{role, content}} message"
        if message["role"] not in ROLES:
            return f"turn {turn} has the unknown role {message['role']!r}; use {', '.join(ROLES)}"
        if not isinstance(message["content"], str):
            return f"turn {turn} ({message['role']}) has no text content"
    if not any(message["role"] == "assistant" for message in messages):
        return "has no assistant turn: there is nothing to train on"
    return None


def conversation_kind(messages: list[dict]) -> str:
    """reasoning when the last assistant turn thinks, else non_reasoning (an empty think block counts as none).

    >>> conversation_kind([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>\\n1+1=2\\n</think>\\n\\n2"}])
    'reasoning'
    >>> conversation_kind([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\\n\\n</think>\\n\\nHello!"}])
    'non_reasoning'
    """
    answer = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    reasoning, _ = split_reasoning(answer)
    return KIND_REASONING if reasoning else KIND_NON_REASONING


@dataclass
class DataStats:
    """What the pre-training line states: the rows and tokens that will be trained."""

    rows_in: int
    too_long: int
    """Rows dropped as longer than --max-length (or, with --truncate, rows cut)."""
    truncate: bool
    reasoning: int
    non_reasoning: int
    train_rows: int
    eval_rows: int
    trained_tokens: int
    """Assistant tokens (the ones with a loss) in one epoch of the training rows."""
    tokens: int
    """All tokens in one epoch of the training rows."""

    def line(self, max_length: int) -> str:
        cut = f"{self.too_long:,} cut at --max-length {max_length}" if self.truncate else f"{self.too_long:,} dropped as longer than --max-length {max_length}"
        held = f", {self.eval_rows:,} held out for eval" if self.eval_rows else ""
        return (
            f"{self.rows_in:,} rows in, {cut}; {self.reasoning:,} reasoning / {self.non_reasoning:,} non-reasoning{held}; "
            f"{self.trained_tokens:,} trained tokens per epoch ({self.tokens:,} in all)"
        )


def tokenize(conversations: list[list[dict]], kinds: list[str], tokenizer, template: str, max_length: int, truncate: bool, eval_fraction: float, seed: int):
    """(train, eval or None, DataStats): rows tokenized with `template`, length-filtered, split for eval."""
    import datasets

    table = datasets.Dataset.from_dict({MESSAGES_COLUMN: conversations, "kind": kinds})

    def encode(batch: dict) -> dict:
        out = tokenizer.apply_chat_template(
            batch[MESSAGES_COLUMN], chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, masks = out["input_ids"], out["assistant_masks"]
        long = [len(row) > max_length for row in ids]
        if truncate:
            ids, masks = [row[:max_length] for row in ids], [row[:max_length] for row in masks]
        return {"input_ids": ids, "assistant_masks": masks, "too_long": long, "trained": [sum(m) for m in masks]}

    table = table.map(encode, batched=True, batch_size=256, remove_columns=[MESSAGES_COLUMN], desc="Tokenizing")
    too_long = sum(table["too_long"])
    # A row cut before its first assistant token has nothing left to train on.
    keep = [(truncate or not long) and trained > 0 for long, trained in zip(table["too_long"], table["trained"])]
    table = table.select([i for i, k in enumerate(keep) if k])
    if len(table) == 0:
        raise UsageError(
            f"no training row is left: all {len(conversations):,} rows are longer than --max-length {max_length}; "
            "raise --max-length or pass --truncate"
        )
    eval_table = None
    if eval_fraction and len(table) >= 2:
        split = table.train_test_split(test_size=max(1, round(eval_fraction * len(table))), seed=seed)
        table, eval_table = split["train"], split["test"]
    kind = pl.Series(table["kind"])
    stats = DataStats(
        rows_in=len(conversations),
        too_long=too_long,
        truncate=truncate,
        reasoning=int((kind == KIND_REASONING).sum()),
        non_reasoning=int((kind == KIND_NON_REASONING).sum()),
        train_rows=len(table),
        eval_rows=len(eval_table) if eval_table is not None else 0,
        trained_tokens=sum(table["trained"]),
        tokens=sum(len(row) for row in table["input_ids"]),
    )
    columns = ["input_ids", "assistant_masks"]
    return table.select_columns(columns), eval_table.select_columns(columns) if eval_table is not None else None, stats
