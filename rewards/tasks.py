r"""Rewards of the synthetic tasks `r1distill synth` makes, for quick R1-Zero experiments.

- countdown (TinyZero): reach `target` from `numbers` with + - * / and parentheses, each number used at
  most once. The equation (the last `\boxed{}` or `<answer>` block, left of any "=") is parsed with
  `ast` and walked over a whitelist of nodes, never `eval`ed: integer literals, + - * /, unary minus.
  Everything else (names, calls, attributes, `**`, floats, strings) is `invalid_expression`; texts over
  `MAX_EQUATION_CHARS` and numbers over `MAX_MAGNITUDE` (literal or intermediate) are refused before
  they cost anything, so `9**9**9`, a 10,000-digit literal or 500 nested parentheses are cheap.
  Arithmetic is exact (fractions).
- arithmetic: the stated integer answer against the gold integer.

Verdicts: correct (1.0); wrong_result, incorrect, no_answer, invalid_expression, too_long, too_large,
bad_numbers, division_by_zero (0.0); no_gold (None: the row has no numbers/target or answer).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from r1distill.rewards.text import Judgement, aligned_rows, answer_region, extract_final_answer

MAX_EQUATION_CHARS = 200
MAX_MAGNITUDE = 10**12
"""Bound on every literal, numerator and denominator met while checking an equation."""
MAX_ANSWER_DIGITS = 30

CORRECT = Judgement(1.0, "correct")
NO_ANSWER = Judgement(0.0, "no_answer")
NO_GOLD = Judgement(None, "no_gold")

_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
# What models write for the operators in LaTeX or Unicode.
_SPELLINGS = {"\\times": "*", "\\cdot": "*", "×": "*", "·": "*", "\\div": "/", "÷": "/", "−": "-", "\\left": "", "\\right": ""}


class _Refused(Exception):
    """An equation that cannot count; its message is the verdict."""


def _value(node: ast.AST, used: list[int]) -> Fraction:
    """The exact value of a whitelisted expression node; integer literals are appended to `used`."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value > MAX_MAGNITUDE:
            raise _Refused("too_large")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand, used)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left, used), _value(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Refused("division_by_zero")
        result = _OPERATORS[type(node.op)](left, right)
        if abs(result.numerator) > MAX_MAGNITUDE or result.denominator > MAX_MAGNITUDE:
            raise _Refused("too_large")
        return result
    raise _Refused("invalid_expression")


def evaluate_equation(text: str) -> tuple[Fraction, list[int]]:
    """(exact value, integer literals used) of an equation's left side; raises ValueError(verdict).

    >>> evaluate_equation("(25 + 50) / 5 - 2 = 13")
    (Fraction(13, 1), [25, 50, 5, 2])
    >>> evaluate_equation("9**9**9")
    Traceback (most recent call last):
    ValueError: invalid_expression
    """
    for spelled, operator in _SPELLINGS.items():
        text = text.replace(spelled, operator)
    text = text.split("=", 1)[0].strip().strip("$").replace("{", "(").replace("}", ")")
    if len(text) > MAX_EQUATION_CHARS:
        raise ValueError("too_long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ValueError("invalid_expression") from None
    used: list[int] = []
    try:
        return _value(tree.body, used), used
    except _Refused as refused:
        raise ValueError(str(refused)) from None


def _countdown(region: str, numbers: Any, target: Any) -> Judgement:
    if numbers is None or target is None:
        return NO_GOLD
    stated = extract_final_answer(region)
    if stated is None:
        return NO_ANSWER
    try:
        value, used = evaluate_equation(stated)
    except ValueError as refused:
        return Judgement(0.0, str(refused))
    if Counter(used) - Counter(int(n) for n in numbers):
        return Judgement(0.0, "bad_numbers")  # a number that was not given, or used more often than given
    return CORRECT if value == Fraction(int(target)) else Judgement(0.0, "wrong_result")


def judge_countdown(completions: list, *, numbers: list | None = None, target: list | None = None, finish_reason: list | None = None) -> list[Judgement]:
    r"""Countdown: the stated equation reaches `target` from `numbers`, each used at most once.

    >>> judged = judge_countdown(["<answer> (50 - 25) * 3 </answer>", "<answer>50 - 25 - 25</answer>", r"\boxed{50 + 3}", "<answer>__import__('os')</answer>"],
    ...                          numbers=[[3, 25, 50]] * 4, target=[75] * 4)
    >>> [verdict for _, verdict in judged]
    ['correct', 'bad_numbers', 'wrong_result', 'invalid_expression']
    """
    rows = aligned_rows(completions, numbers=numbers, target=target, finish_reason=finish_reason)
    return [_countdown(answer_region(text, reason), nums, goal) for text, nums, goal, reason in rows]


_INTEGER = re.compile(r"[+-]?\d+")


def _arithmetic(region: str, gold: Any) -> Judgement:
    if gold is None or not str(gold).strip():
        return NO_GOLD
    stated = extract_final_answer(region)
    if stated is None:
        return NO_ANSWER
    stated = "".join(stated.split()).strip("$").replace(",", "")
    gold = str(gold).strip()
    # A gold longer than any answer that counts equals none of them; int() would refuse it past 4,300 digits.
    if len(stated) > MAX_ANSWER_DIGITS + 1 or not _INTEGER.fullmatch(stated) or len(gold) > MAX_ANSWER_DIGITS + 1:
        return Judgement(0.0, "incorrect")
    return CORRECT if int(stated) == int(gold) else Judgement(0.0, "incorrect")


def judge_arithmetic(completions: list, *, answer: list | None = None, finish_reason: list | None = None) -> list[Judgement]:
    r"""Arithmetic: the stated integer (last `\boxed{}` or `<answer>` block; spaces and thousands commas
    ignored) equals the gold.

    >>> [verdict for _, verdict in judge_arithmetic([r"\boxed{1,024}", "<answer>-7</answer>", "it is 5"], answer=["1024", "7", "5"])]
    ['correct', 'incorrect', 'no_answer']
    """
    rows = aligned_rows(completions, answer=answer, finish_reason=finish_reason)
    return [_arithmetic(answer_region(text, reason), gold) for text, gold, reason in rows]
