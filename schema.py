"""The tables that flow between r1distill's stages, written down once.

Every stage reads and writes these columns by the names defined here, so a rename happens in one place.

Prompt table (input of `generate`, one row per problem):

    prompt_id  string  unique key; the input's id column, or a stable hash of the problem text
    problem    string  the question put to the teacher (required, never null)
    answer     string  gold final answer, or null when unknown
    ...                any other input columns, carried through to the traces unchanged

Trace table (output of `generate`, one row per (prompt, sample); TRACE_SCHEMA):

    id                 string     unique row key, "<prompt_id>:<sample>"
    prompt_id          string     the prompt this trace answers
    sample             int32      0..n-1
    problem            string     as in the prompt table
    answer             string     gold answer or null
    prompt             list<struct<role, content>>  the messages sent to the teacher
    completion         string     the full generated text in canonical form (`canonical_completion`):
                                  thinking returned in a separate field is put back as
                                  "<think>\n...\n</think>\n\n" + answer, and a completion of a template
                                  that pre-fills "<think>" starts with that opening tag
    reasoning          string     the thinking text, or null when the completion has no thinking
    response           string     the text after the thinking ("" when the thinking was cut off)
    finish_reason      string     "stop", "length" (hit max_tokens) or "error" (failed after retries, or a
                                  server's other reason such as content_filter, kept in `error`)
    completion_tokens  int32      generated tokens, null when the server does not report them
    prompt_tokens      int32      prompt tokens, null when unknown
    model              string     the teacher model as given to `--model`
    backend            string     transformers, openai or vllm
    max_tokens         int32      the generation budget this row was made with
    request_key        string     hash of the settings that change the output (not max_tokens)
    error              string     why the request failed (finish_reason "error"), else null
    created_at         timestamp  when the row was generated (UTC); the newest row wins on resume
    forced             bool       with --thinking-budget: the thinking was cut at the budget and closed
                                  by generate (budget forcing); null for a run without a budget
    ...                           the prompt table's extra columns

Scored table (`filter` OUT/scored/, one row per input trace; every row, kept or not):

    id, prompt_id, sample, source     as in the input (source: the input's `source` column, else null)
    finish_reason      string     as in the input, null when it has none
    length             int64      completion_tokens, else the completion's characters (for shortest:K)
    <check>_score      float64    one per enabled check (accuracy, format, ...): the rule's score, null
                                  when it cannot judge the row
    <check>_verdict    string     the rule's verdict (correct, missing_think, truncated, ...)
    failed_check       string     the first enabled check the row failed, else null
    pass_rate          float64    the prompt's correct / samples; samples that failed in generate
                                  (finish_reason "error") are not counted; null when none is left
    drop_reason        string     the first reason the row was dropped, else null: invalid_problem,
                                  generation_error, duplicate, near_duplicate, contaminated,
                                  pass_rate_too_low, pass_rate_too_high, rejection_sampling, or the
                                  name of the first check it failed
    keep               bool       the row is in the SFT data

SFT table (`filter` OUT/data/, one row per training conversation; SFT_SCHEMA):

    id, prompt_id      string     the trace's ids (a non-reasoning row: its own id twice)
    messages           list<struct<role, content>>  the conversation; a reasoning row's assistant turn is
                                  `r1_layout(reasoning, response)`
    kind               string     KIND_REASONING or KIND_NON_REASONING
    source             string     where the row came from (input column `source`, else the file name)
    problem            string     the problem (a non-reasoning row: its first user turn)
    answer             string     the gold answer; null for non-reasoning rows
    pass_rate          float64    the prompt's pass rate in filter; null for non-reasoning rows

Eval sample table (`eval` OUT/samples.parquet, one row per (model, budget, prompt, sample)): the trace
table's columns (a budget-forcing row has no `prompt`), then

    budget             int64      the thinking budget of a budget-forcing row; null for the uncapped run
    forced             bool       the thinking was cut at the budget and closed by eval
    thinking_tokens    int64      tokens of the thinking, null when no tokenizer is known
    response_tokens    int64      tokens of the response, null when no tokenizer is known
    verdict            string     the accuracy verdict, or generation_error for a row that failed in generate
    score              float64    the accuracy score (null: cannot verify)
    stated_answer      string     the final answer the completion states (`rewards.stated_answer`)
    format_verdict     string     the format check's verdict (`rewards.rule("format")`: ok, missing_think, ...), null
                                  for a row that failed in generate
    vote               int64      the sample's maj@k class within its (model, budget, prompt): 0 is the
                                  gold answer, equal numbers are equivalent answers, null casts no vote

Prompt-set table (input of `rl` and `eval`): a prompt table whose `answer` is the gold to verify
against, optionally with `pass_rate`. A `filter` output is one (its problem, answer and pass_rate
columns); so is any prompt table with answers.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import polars as pl

PROMPT_ID = "prompt_id"
PROBLEM = "problem"
ANSWER = "answer"

PASS_RATE = "pass_rate"
MESSAGES_COLUMN = "messages"

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
        pa.field("forced", pa.bool_()),
    ]
)
TRACE_COLUMNS = tuple(TRACE_SCHEMA.names)

KIND_REASONING = "reasoning"
KIND_NON_REASONING = "non_reasoning"

SFT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field(PROMPT_ID, pa.string()),
        pa.field(MESSAGES_COLUMN, MESSAGES),
        pa.field("kind", pa.string()),
        pa.field("source", pa.string()),
        pa.field(PROBLEM, pa.string()),
        pa.field(ANSWER, pa.string()),
        pa.field(PASS_RATE, pa.float64()),
    ]
)

# Drop reasons that are not a check's verdict: the row was never judged.
DROP_GENERATION_ERROR = "generation_error"
DROP_INVALID_PROBLEM = "invalid_problem"


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def r1_layout(reasoning: str, response: str) -> str:
    """A reasoning trace as one text, in DeepSeek-R1's layout (the SFT assistant turn, too).

    >>> r1_layout(" 2+2 is 4 ", "4")
    '<think>\\n2+2 is 4\\n</think>\\n\\n4'
    """
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{response.strip()}"


def canonical_completion(text: str, *, reasoning: str | None = None, prefilled_think: bool = False) -> str:
    """A completion as stored: one text in which the thinking is always inside `<think>...</think>`.

    A separately returned thinking (DeepSeek's API, vLLM's reasoning parser) is put back in R1's
    layout; when the prompt pre-filled `<think>` (R1-Distill templates) the opening tag is put back, so
    format checks, the accuracy check and SFT read the thinking as thinking with no extra flag.

    >>> canonical_completion("4", reasoning="2+2 is 4")
    '<think>\\n2+2 is 4\\n</think>\\n\\n4'
    >>> canonical_completion("2+2 is 4\\n</think>\\n\\n4", prefilled_think=True)
    '<think>\\n2+2 is 4\\n</think>\\n\\n4'
    """
    if reasoning is not None:
        return r1_layout(reasoning, text)
    if prefilled_think and not text.lstrip().startswith(THINK_OPEN):
        return THINK_OPEN + ("" if text.startswith("\n") else "\n") + text
    return text


def closes_unopened_think(text: str) -> bool:
    """Whether a reply holds `</think>` with no `<think>` before it: the prompt opened the block (a pre-filled trace).

    >>> closes_unopened_think("2+2 is 4\\n</think>\\n\\n4"), closes_unopened_think("<think>\\nhm\\n</think>\\n4"), closes_unopened_think("4")
    (True, False, False)
    """
    close = text.find(THINK_CLOSE)
    return close >= 0 and text.find(THINK_OPEN, 0, close) < 0


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
    table = pa.table([pa.array([_value(row, f.name) for row in rows], type=f.type) for f in TRACE_SCHEMA], schema=TRACE_SCHEMA)
    # pa.table accepts nulls in a required column; only the Parquet writer would refuse them, too late to tell which row.
    for name in _REQUIRED:
        if table.column(name).null_count:
            raise ValueError(f"required column {name!r} is null")
    return table


def _value(row: dict, name: str):
    # A journal row of a version before `forced` lacks it: it was made without a thinking budget.
    return row.get(name) if name in _ADDED else row[name]


_ADDED = frozenset({"forced"})


def scan_shards(shards: list) -> pl.LazyFrame:
    """Every row of these trace shards as one lazy table, shards of a version before a column was added
    included: an OUT resumed by a newer r1distill holds both, and a column the older ones lack
    (`forced`: they were made without a thinking budget, so False) is filled in, not an error.
    """
    import polars as pl  # here, not at the top: the rewards import this module and stay light

    schema: dict[str, pl.DataType] = {}
    for shard in shards:
        schema.update({name: dtype for name, dtype in pl.read_parquet_schema(shard).items() if name not in schema})
    scan = pl.scan_parquet(shards, schema=pl.Schema(schema), missing_columns="insert")
    return scan.with_columns(pl.col(name).fill_null(False) for name in _ADDED if name in schema)
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
