"""What every reward shares: the `Judgement` it returns and how it reads a completion (its text, its
thinking and response, the final answer it commits to).

Every reward reads completions through these functions, so "where is the answer" has one definition:
- The thinking is everything up to the first `</think>`; a completion that opens a think block and
  never closes it (cut off mid-thought) is all thinking and has no response.
- A response cut off by the token limit (finish_reason "length") has an answer only where it states
  one explicitly (`\\boxed{}` or `<answer>`): the last number of a half-written response (a list item
  "4.") is not an answer.
Linear time on hostile inputs (a megabyte of braces, a loop of unclosed tags): no regex backtracking,
no recursion; and the answer is looked for in the last `ANSWER_CHARS` of a response only.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any, NamedTuple

from r1distill.schema import FINISH_LENGTH, split_reasoning

ANSWER_CHARS = 20_000
"""Characters at the end of a response that an answer is read from (about 5,000 tokens, far more than
R1's answer sections take). The answer is stated last, and the bound keeps the cost of every pattern
and of Math-Verify per row constant: a degenerate trace of megabytes of whitespace or repeated
keywords costs what 20,000 characters cost, in the parent process of filter, rl and eval."""


class Judgement(NamedTuple):
    """A reward's view of one completion."""

    score: float | None  # None: the rule cannot verify this row (TRL skips it)
    verdict: str  # short snake_case label, e.g. "ok", "missing_think"


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a TRL conversational completion.

    >>> completion_text([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    '4'
    >>> completion_text(None)
    ''
    """
    if isinstance(completion, str):
        return completion
    return (completion[-1]["content"] or "") if completion else ""


def aligned_rows(completions: list, **columns: list | None) -> Iterator[tuple]:
    """(completion text, *values of `columns`) per completion; a column that is None is None in every row.

    Columns are per-row lists, as TRL passes dataset columns; each must have one value per completion.

    >>> list(aligned_rows([[{"role": "assistant", "content": "4"}], "5"], answer=["4", "4"], finish_reason=None))
    [('4', '4', None), ('5', '4', None)]
    """
    n = len(completions)
    aligned = []
    for name, value in columns.items():
        if value is None:
            value = [None] * n
        elif isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise TypeError(f"column {name!r} must be a list with one value per completion, got {type(value).__name__}")
        elif len(value) != n:
            raise ValueError(f"column {name!r} has {len(value)} values for {n} completions")
        aligned.append(value)
    return zip(map(completion_text, completions), *aligned)


def split_thinking(completion: str) -> tuple[str | None, str]:
    r"""(thinking, response) at the first `</think>`: the split `generate` stores.

    An opened block that never closes (a truncated trace) is all thinking; no tags at all is all response.

    >>> split_thinking("<think>\nx is 2\n</think>\n\nx = 2")
    ('x is 2', 'x = 2')
    >>> split_thinking("x is 2\n</think>\nx = 2")  # a template pre-filled <think>
    ('x is 2', 'x = 2')
    >>> split_thinking("<think>\nstill going")
    ('still going', '')
    """
    return split_reasoning(completion)


_BOXED = re.compile(r"\\(?:boxed|fbox)(?:\s*(\{)|\s+([^\s{}$]+))")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _boxed_content(text: str) -> str | None:
    r"""The argument of the last \boxed / \fbox, or None when there is none or it never closes."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    match = _BOXED.match(text, start) if start >= 0 else None
    if match is None:
        return None
    if match.group(2) is not None:  # "\boxed 5"
        return match.group(2)
    depth = 0
    # Only braces and escapes are visited (escaped braces like \{1,2\} are literal): one linear scan,
    # no recursion, whatever the nesting depth.
    for token in _BRACE_OR_ESCAPE.finditer(text, match.start(1)):
        if token.group() in "{}":
            depth += 1 if token.group() == "{" else -1
            if depth == 0:
                return text[match.end(1) : token.start()]
    return None


def extract_final_answer(response: str) -> str | None:
    r"""The final answer a response commits to: the last \boxed{} (or \fbox{}), else the last
    <answer>...</answer> block, else None.

    If the last \boxed never closes (a trace cut off mid-answer) an earlier one is not used: the model
    was still changing its answer.

    >>> extract_final_answer(r"So \boxed{3}... no: \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_final_answer("<answer> Paris </answer>")
    'Paris'
    >>> extract_final_answer(r"\boxed{\{1, 2\}") is None
    True
    """
    boxed = _boxed_content(response)
    if boxed is not None:
        return boxed.strip() or None
    # rfind/find rather than a regex: a loop of unclosed <answer> tags must not cost quadratic time
    start = response.rfind(_ANSWER_OPEN)
    end = response.find(_ANSWER_CLOSE, start)
    if start < 0 or end < 0:
        return None
    return response[start + len(_ANSWER_OPEN) : end].strip() or None


def answer_region(completion: str, finish_reason: str | None = None) -> str:
    r"""The part of a completion an answer may be read from ("" when it has none).

    That is the last `ANSWER_CHARS` of the response after the thinking. A completion whose thinking
    never closes has none, whatever the thinking says; a response cut off by the token limit has one
    only if it states its answer explicitly (boxed or `<answer>`).

    >>> answer_region("<think>\nit is \\boxed{4}")  # thinking only: no answer
    ''
    >>> answer_region("<think>\nhm\n</think>\n\nSteps:\n3. add\n4.", finish_reason="length")
    ''
    >>> answer_region("<think>\nhm\n</think>\n\nSo \\boxed{4}. Also", finish_reason="length")
    'So \\boxed{4}. Also'
    """
    response = split_thinking(completion)[1][-ANSWER_CHARS:]
    if finish_reason == FINISH_LENGTH and extract_final_answer(response) is None:
        return ""
    return response


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_AROUND_ANSWER = string.whitespace + "$*"


def normalize_answer(text: str) -> str:
    r"""The form answers are compared in: \text{} wrappers, surrounding $ and * and trailing periods
    dropped, all whitespace removed, case-folded.

    >>> normalize_answer(r" $\text{New York}$. ")
    'newyork'
    """
    # str.strip, not a loop or regex: linear even for a trace that ends in a million periods
    text = _TEXT_WRAPPER.sub(r"\1", text).rstrip(_AROUND_ANSWER + ".").lstrip(_AROUND_ANSWER)
    return "".join(text.split()).casefold()
