"""The tables that flow between r1distill's stages, written down once.

Every stage reads and writes these columns by the names defined here, so a rename happens in one place.

Prompt table (input of `generate`, one row per problem):

    prompt_id  string  unique key; the input's id column, or a stable hash of the problem text
    problem    string  the question put to the teacher (required, never null)
    answer     string  gold final answer, or null when unknown
    ...                any other input columns, carried through to the traces unchanged

Trace table (output of `generate`, one row per (prompt, sample)):

    id                 string     unique row key, "<prompt_id>:<sample>"
    prompt_id          string     the prompt this trace answers
    sample             int32      0..n-1
    problem            string     as in the prompt table
    answer             string     gold answer or null
    prompt             list<struct<role, content>>  the messages sent to the teacher
    completion         string     the full generated text; when a server returns the thinking in a
                                  separate field it is put back as "<think>\\n...\\n</think>\\n\\n" + answer
    reasoning          string     the thinking text, or null when the completion has no thinking
    response           string     the text after the thinking ("" when the thinking was cut off)
    finish_reason      string     "stop", "length" (hit max_tokens) or "error" (failed after retries)
    completion_tokens  int32      generated tokens, null when the server does not report them
    prompt_tokens      int32      prompt tokens, null when unknown
    model              string     the teacher model as given to `--model`
    backend            string     transformers, openai or vllm
    max_tokens         int32      the generation budget this row was made with
    request_key        string     hash of the settings that change the output (not max_tokens)
    error              string     why the request failed (finish_reason "error"), else null
    created_at         timestamp  when the row was generated (UTC); the newest row wins on resume
    ...                           the prompt table's extra columns
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

PROMPT_ID = "prompt_id"
PROBLEM = "problem"
ANSWER = "answer"

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_ERROR = "error"
FINISH_REASONS = (FINISH_STOP, FINISH_LENGTH, FINISH_ERROR)

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

TRACE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field(PROMPT_ID, pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field(PROBLEM, pa.string(), nullable=False),
        pa.field(ANSWER, pa.string()),
        pa.field("prompt", MESSAGES, nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("reasoning", pa.string()),
        pa.field("response", pa.string(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("completion_tokens", pa.int32()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("max_tokens", pa.int32(), nullable=False),
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
TRACE_COLUMNS = tuple(TRACE_SCHEMA.names)


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def r1_layout(reasoning: str, response: str) -> str:
    """A reasoning trace as one text, in DeepSeek-R1's layout (the SFT assistant turn, too).

    >>> r1_layout(" 2+2 is 4 ", "4")
    '<think>\\n2+2 is 4\\n</think>\\n\\n4'
    """
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{response.strip()}"


def split_reasoning(text: str, *, prefilled_think: bool = False, reasoning: str | None = None) -> tuple[str | None, str]:
    """(reasoning, response) of a completion; reasoning is None when there was no thinking.

    >>> split_reasoning("<think>\\n2+2 is 4\\n</think>\\n\\nThe answer is 4.")
    ('2+2 is 4', 'The answer is 4.')
    >>> split_reasoning("2+2 is 4\\n</think>\\nAnswer: 4", prefilled_think=True)
    ('2+2 is 4', 'Answer: 4')
    >>> split_reasoning("<think>\\nstill thinking when the budget ran o")
    ('still thinking when the budget ran o', '')
    >>> split_reasoning("Answer: 4", reasoning="2+2 is 4")
    ('2+2 is 4', 'Answer: 4')
    >>> split_reasoning("Hello!")
    (None, 'Hello!')
    """
    if reasoning is not None:
        return reasoning.strip(), text.strip()
    head, closed, tail = text.partition(THINK_CLOSE)
    if closed:
        return head.strip().removeprefix(THINK_OPEN).strip(), tail.strip()
    stripped = text.lstrip()
    if prefilled_think or stripped.startswith(THINK_OPEN):
        return stripped.removeprefix(THINK_OPEN).strip(), ""
    return None, text.strip()


def trace_table(rows: list[dict]) -> pa.Table:
    """A trace table (TRACE_SCHEMA columns only) from row dicts; raises when a row does not fit it.

    Built column by column: several times faster than `pa.Table.from_pylist` for the nested `prompt`.
    """
    table = pa.table([pa.array([row[f.name] for row in rows], type=f.type) for f in TRACE_SCHEMA], schema=TRACE_SCHEMA)
    # pa.table accepts nulls in a required column; only the Parquet writer would refuse them, too late to tell which row.
    for name in _REQUIRED:
        if table.column(name).null_count:
            raise ValueError(f"required column {name!r} is null")
    return table


_REQUIRED = [f.name for f in TRACE_SCHEMA if not f.nullable]
_TEXT = [f.name for f in TRACE_SCHEMA if pa.types.is_string(f.type)]
_COUNTS = [f.name for f in TRACE_SCHEMA if pa.types.is_int32(f.type)]
_INT32_MAX = 2**31 - 1


def coerce_row(row: dict) -> dict:
    """`row` with its text and integer TRACE_SCHEMA values made to fit their columns.

    Replies come from servers we do not control, and one value the Parquet conversion rejects would
    fail every later conversion of its journal. So text becomes text, an integer column (each one
    counts something) gets a non-negative int or None, and a finish_reason outside FINISH_REASONS
    becomes "error" with the odd value in `error`, so the next run retries the row. What no coercion
    can fix (a missing id, a malformed prompt) is left for the conversion to reject.

    >>> row = coerce_row({"completion_tokens": "17", "prompt_tokens": "seventeen", "completion": 42, "finish_reason": "eos"})
    >>> row["completion_tokens"], row["prompt_tokens"], row["completion"], row["finish_reason"], row["error"]
    (17, None, '42', 'error', "unexpected finish_reason 'eos'")
    """
    row = dict(row)
    for name in _TEXT:
        value = row.get(name)
        if not (value is None or isinstance(value, str)):
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        row[name] = value
    for name in _COUNTS:
        value = row.get(name)
        if not (value is None or (type(value) is int and 0 <= value <= _INT32_MAX)):
            value = _count(value)
        row[name] = value
    if row["finish_reason"] not in FINISH_REASONS:
        row["error"] = row["error"] or f"unexpected finish_reason {row['finish_reason']!r}"
        row["finish_reason"] = FINISH_ERROR
    return row


def _count(value: object) -> int | None:
    """A count from an integral number or numeric text ("17", "17.0"); None for anything else."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value <= _INT32_MAX:
        return value
    return None


def stable_id(text: str) -> str:
    """A short id that depends only on `text`, the same on every machine and run.

    >>> stable_id("What is 1+1?")
    '31adf3e245f99d7b'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def trace_id(prompt_id: str, sample: int) -> str:
    """The unique key of one trace row.

    >>> trace_id("gsm8k-12", 3)
    'gsm8k-12:3'
    """
    return f"{prompt_id}:{sample}"
