"""r1distill synth: prompt tables of synthetic tasks with exact answers, for quick R1-Zero runs.

    r1distill synth countdown -n 2000 -o runs/countdown.jsonl
    r1distill synth arithmetic -n 2000 -o runs/arithmetic.jsonl --difficulty 4

Small models learn to reason on these within a few hundred GRPO steps (TinyZero's countdown), and the
answers are checked by rules that cannot be fooled or hung (`rewards/tasks.py`). Every row is a prompt
table row (`id`, `problem`, `answer`, as `generate` and `rl` read it) plus what its reward reads:

- countdown (TinyZero): `numbers` (3 to 4 integers from 1 to 99 by default) and a `target` that some
  equation over them reaches with + - * / and integer intermediate results; `answer` is one such
  equation. The countdown reward accepts any equation that reaches the target using each number at
  most once.
- arithmetic: an integer expression of `--difficulty` operations (+, -, *, with parentheses) over
  operands up to `--max-number` whose `answer` is its exact value (`--difficulty 1 --max-number 9`
  is within reach of a 135M model).

- code: a small function-writing problem ("write `f(xs)` that returns the sum of the elements of xs
  above 7") whose `tests` column holds, as JSON text, TACO's call-based layout `{"inputs": [[xs],
  ...], "outputs": [...], "fn_name": "f"}`, and whose `answer` is a reference solution; the code
  check (`--check code`, `--reward code`, `--accuracy code`) runs a response's program against it.

The problems end without a period: the R1-Zero prompt puts one after them. The same seed makes the
same file.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from r1distill import files
from r1distill.errors import UsageError
from r1distill.rewards import TASKS
from r1distill.schema import stable_id

log = logging.getLogger(__name__)

SYNTH_TASKS = (*TASKS, "code")
CODE_TESTS = 6
"""Tests per code problem."""
# (what f returns, given K, the reference body); each f takes a list of integers xs.
_CODE_TEMPLATES = (
    ("the sum of the elements of xs greater than {k}", "return sum(x for x in xs if x > {k})"),
    ("the number of elements of xs divisible by {k}", "return sum(1 for x in xs if x % {k} == 0)"),
    ("the largest element of xs plus {k}, or {k} if xs is empty", "return max(xs) + {k} if xs else {k}"),
    ("xs with every element multiplied by {k}, in the same order", "return [x * {k} for x in xs]"),
    ("the elements of xs smaller than {k}, sorted in increasing order", "return sorted(x for x in xs if x < {k})"),
    ("the sum of the first {k} elements of xs (all of them if xs is shorter)", "return sum(xs[:{k}])"),
)


@dataclass
class SynthConfig:
    """Settings of one `r1distill synth` run."""

    task: str
    """Task to make: countdown, arithmetic or code."""
    output: str = field(metadata={"flags": ("--output", "-o")})
    """Output file, .jsonl or .parquet."""
    n: int = field(default=1000, metadata={"flags": ("-n", "--num")})
    """Problems to make."""
    seed: int = 0
    """Random seed; the same seed makes the same file."""
    numbers: int = 4
    """countdown: most numbers per problem (at least 3 are given)."""
    max_number: int = 99
    """Largest number in a problem (countdown: the numbers given; arithmetic: each operand)."""
    difficulty: int = 3
    """arithmetic: operations per expression."""

    def check(self) -> None:
        """Raise one UsageError listing every problem with these settings."""
        problems = []
        if self.task not in SYNTH_TASKS:
            problems.append(f"TASK must be one of {', '.join(SYNTH_TASKS)}, got {self.task!r}")
        if self.n < 1:
            problems.append(f"-n must be at least 1, got {self.n}")
        if not 3 <= self.numbers <= 6:
            problems.append(f"--numbers must be in [3, 6], got {self.numbers}")
        if not 2 <= self.max_number <= 10_000:
            problems.append(f"--max-number must be in [2, 10000], got {self.max_number}")
        if not 1 <= self.difficulty <= 20:
            problems.append(f"--difficulty must be in [1, 20], got {self.difficulty}")
        if Path(self.output).suffix not in (".jsonl", ".parquet"):
            problems.append(f"-o {self.output}: use a .jsonl or .parquet file")
        elif placed := files.output_problem(self.output):
            problems.append(placed)
        if problems:
            raise UsageError("; ".join(problems))


def countdown(rng: random.Random, most: int, largest: int) -> dict:
    """One countdown problem: numbers, a target reached by combining all of them, and that equation."""
    while True:
        numbers = [rng.randint(1, largest) for _ in range(rng.randint(3, most))]
        # Combine the numbers in a random order, keeping every intermediate result a positive integer.
        terms = [(str(n), n) for n in numbers]
        rng.shuffle(terms)
        text, value = terms[0]
        for term, n in terms[1:]:
            choices = ["+", "*"] + (["-"] if value > n else []) + (["/"] if value % n == 0 else [])
            op = rng.choice(choices)
            value = {"+": value + n, "-": value - n, "*": value * n, "/": value // n}[op]
            text = f"({text} {op} {term})"
        if 1 <= value <= 1000 and value not in numbers:
            break
    equation = text[1:-1] if text.startswith("(") else text
    problem = (
        f"Using the numbers {numbers}, create an equation that equals {value}. You can use basic arithmetic "
        "operations (+, -, *, /) and each number at most once"
    )
    return {"problem": problem, "answer": equation, "numbers": numbers, "target": value}


def arithmetic(rng: random.Random, operations: int, largest: int = 99) -> dict:
    """One expression of `operations` operations over integers from 1 to `largest`, with its exact value."""
    text, value = _expression(rng, operations, largest)
    return {"problem": f"Compute {text}", "answer": str(value), "difficulty": operations}


def code(rng: random.Random, largest: int = 99) -> dict:
    """One function-writing problem with call-based tests (fn_name f) and a reference solution."""
    returns, body = rng.choice(_CODE_TEMPLATES)
    k = rng.randint(1, 9)
    solution = f"def f(xs):\n    {body.format(k=k)}\n"
    namespace: dict = {}
    exec(solution, namespace)  # our own template, never model output: the expected outputs come from it
    inputs = [[[rng.randint(-largest, largest) for _ in range(rng.randint(0, 8))]] for _ in range(CODE_TESTS)]
    tests = {"inputs": inputs, "outputs": [namespace["f"](*args) for args in inputs], "fn_name": "f"}
    problem = (
        f"Write a Python function `f(xs)` that takes a list of integers xs and returns {returns.format(k=k)}. "
        "Give the complete function in a ```python code block"
    )
    return {"problem": problem, "answer": solution, "tests": json.dumps(tests)}


def _expression(rng: random.Random, operations: int, largest: int) -> tuple[str, int]:
    if operations == 0:
        n = rng.randint(1, largest)
        return str(n), n
    left_ops = rng.randint(0, operations - 1)
    (left, a), (right, b) = _expression(rng, left_ops, largest), _expression(rng, operations - 1 - left_ops, largest)
    op = rng.choice("+-*")
    # Operands that are expressions get parentheses, so the text reads the way the value was computed.
    left = f"({left})" if left_ops else left
    right = f"({right})" if operations - 1 - left_ops else right
    return f"{left} {op} {right}", {"+": a + b, "-": a - b, "*": a * b}[op]


@dataclass
class SynthSummary:
    task: str
    problems: int
    """How many were written (fewer than --n where a small --max-number has no more distinct ones)."""
    output: str


def synth(cfg: SynthConfig) -> SynthSummary:
    """Write `cfg.n` problems of `cfg.task` to `cfg.output`.

    Problems are unique: a repeat draw is skipped (a small --max-number may not have n problems).
    """
    cfg.check()
    rng = random.Random(cfg.seed)
    rows: dict[str, dict] = {}
    for _ in range(cfg.n * 20):
        if cfg.task == "code":
            row = code(rng, cfg.max_number)
        else:
            row = countdown(rng, cfg.numbers, cfg.max_number) if cfg.task == "countdown" else arithmetic(rng, cfg.difficulty, cfg.max_number)
        rows.setdefault(stable_id(row["problem"]), row)
        if len(rows) == cfg.n:
            break
    table = [{"id": f"{cfg.task}-{i}", "task": cfg.task, **row} for i, row in enumerate(rows.values())]
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written whole or not at all: a problem set cut short would look complete to the next stage.
    if out.suffix == ".parquet":
        import polars as pl

        files.write_parquet(out, pl.DataFrame(table))
    else:
        files.write_text(out, "".join(json.dumps(row) + "\n" for row in table))
    return SynthSummary(cfg.task, len(table), cfg.output)


def print_summary(summary: SynthSummary) -> None:
    log.info("%d %s problems → %s", summary.problems, summary.task, summary.output)
