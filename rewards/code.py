"""The code reward: the last fenced code block of the response, run against the problem's tests.

`--check code` (filter), `--accuracy code` (eval) and `--reward code` (rl) all use `CodeReward`. A row's
tests come from the column `--tests-column` (default `tests`), JSON text or nested values, in the
layouts of the public code reasoning sets:
- a list of `{"input": ..., "output": ...}` (Codeforces, LiveCodeBench): stdin/stdout tests;
- a dict of lists `{"inputs": [...], "outputs": [...], "fn_name": ...}` (TACO, APPS; CodeContests'
  `input`/`output` too): stdin/stdout tests, or with `fn_name` call-based tests whose inputs are
  argument lists and whose outputs are return values (TACO's `[value]` wrapping is accepted);
- test-file text with asserts or pytest-style `test_*` functions that import `solution` (KodCode),
  or `{"test": text, "entry_point": name}` whose `check(candidate)` is called (HumanEval, HumanEval+).

Each test runs in a fresh sandbox (sandbox.py) given only its input; stdout (whitespace-separated
tokens, numbers within 1e-6) and return values are compared here, out of the program's reach. A
problem's tests are capped at `max_tests`, the longest kept (as rLLM does: long tests are the strong
ones). The score is the share of tests passed, or 0/1 with `all_or_nothing`.

The sandbox's bwrap is `bwrap` on PATH, or the binary the environment variable R1DISTILL_BWRAP names.

Verdicts: passed (1.0); failed, compile_error, runtime_error, timeout, no_code (the share passed, 0.0
for the last two); no_tests (None: nothing to check against).
"""

from __future__ import annotations

import ast
import json
import math
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from r1distill.rewards.harness import MARKER
from r1distill.rewards.sandbox import Job, Limits, Sandbox
from r1distill.rewards.text import Judgement, aligned_rows, answer_region

MAX_CODE_CHARS = 64_000
MAX_SCANNED_CHARS = 400_000
"""Only the response's last characters are searched for a code block: model output is untrusted."""
_PYTHON_TAGS = ("", "python", "py", "python3")
NO_TESTS = Judgement(None, "no_tests")


@dataclass(kw_only=True)
class CodeSettings:
    """The code check's settings, shared by filter, eval and rl."""

    tests_column: str = "tests"
    """Column with each problem's code tests (code check): [{input, output}], {inputs, outputs, fn_name}, or a test file (see README)."""
    max_tests: int = 16
    """Most tests run per problem (code check); the longest are kept."""
    code_timeout: int = 5
    """CPU seconds a program may spend on one test (code check); then the test is a timeout."""
    all_or_nothing: bool = field(default=False, metadata={"flags": ("--all-or-nothing",)})
    """Code check scores 1 only when every test passes, instead of the share passed."""
    allow_unsandboxed: bool = False
    """Run untrusted programs without a sandbox where bubblewrap cannot make one (unsafe; the code check refuses otherwise)."""

    def code_options(self, workers: int | None = None) -> dict:
        """The options of `rule("code")` these settings make."""
        return {"tests_column": self.tests_column, "max_tests": self.max_tests, "cpu_seconds": self.code_timeout,
                "all_or_nothing": self.all_or_nothing, "allow_unsandboxed": self.allow_unsandboxed, "workers": workers}

    def code_problems(self) -> list[str]:
        return [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}" for name in ("max_tests", "code_timeout") if getattr(self, name) < 1]


def extract_code(response: str) -> str | None:
    """The last closed fenced code block (``` with no tag or a Python tag) of a response's tail; None if none.

    One pass over the lines of the last `MAX_SCANNED_CHARS` characters, no regex.

    >>> extract_code("Try:\\n```python\\nprint(1)\\n```\\nor\\n```\\nprint(2)\\n```\\nOutput:\\n```text\\n2\\n```")
    'print(2)'
    >>> extract_code("```python\\nprint(1)") is None
    True
    """
    last, block, tag = None, None, ""
    for line in response[-MAX_SCANNED_CHARS:].splitlines():
        stripped = line.strip()
        if block is None:
            if stripped.startswith("```"):
                block, tag = [], stripped[3:].strip().lower()
        elif stripped == "```":
            if tag in _PYTHON_TAGS:
                last = "\n".join(block)
            block = None
        else:
            block.append(line)
    return last if last is not None and last.strip() and len(last) <= MAX_CODE_CHARS else None


@dataclass(frozen=True)
class Tests:
    """A problem's tests in one of the three kinds."""

    kind: str
    """stdio, call or assert."""
    cases: list[tuple[Any, Any]] = field(default_factory=list)
    name: str = ""
    """The function called (call) or checked (assert's HumanEval `check`)."""
    file: str = ""


def parse_tests(value: Any, max_tests: int) -> Tests | None:
    """A row's tests (see the module docstring), the longest `max_tests` cases kept; None when there are none.

    Raises ValueError naming the layout a value does not fit.

    >>> parse_tests('{"inputs": [[1], [22]], "outputs": [2, 44], "fn_name": "double"}', 1)
    Tests(kind='call', cases=[([22], 44)], name='double', file='')
    >>> parse_tests([{"input": "1 2\\n", "output": "3\\n"}], 16).kind
    'stdio'
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "[{":
            try:
                value = json.loads(text)
            except ValueError:
                pass
        if isinstance(value, str):
            return Tests("assert", file=value)
    if isinstance(value, dict) and isinstance(value.get("test"), str):
        return Tests("assert", file=value["test"], name=value.get("entry_point") or "")
    if isinstance(value, dict):
        inputs = value.get("inputs", value.get("input"))
        outputs = value.get("outputs", value.get("output"))
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise ValueError("a dict of tests needs lists 'inputs' and 'outputs' of one length")
        name = value.get("fn_name") or ""
        cases = list(zip(inputs, outputs))
    elif isinstance(value, list):
        if not all(isinstance(case, dict) and "input" in case and "output" in case for case in value):
            raise ValueError("a list of tests needs {input, output} items")
        name, cases = "", [(case["input"], case["output"]) for case in value]
    else:
        raise ValueError(f"tests must be a list, a dict or a test file, got {type(value).__name__}")
    if not cases:
        return None
    if not name and not all(isinstance(i, str) and isinstance(o, str) for i, o in cases):
        raise ValueError("stdin/stdout tests need text inputs and outputs (give fn_name for call-based tests)")
    if name and not all(isinstance(i, list) for i, _ in cases):
        raise ValueError("call-based tests (fn_name) need a list of arguments per input")
    cases = sorted(cases, key=lambda case: -len(json.dumps(case)))[:max_tests]
    return Tests("call" if name else "stdio", cases, name)


def _close(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    except ValueError:
        return False


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(got, bool) or isinstance(want, bool):
        return got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_same_value(g, w) for g, w in zip(got, want))
    return got == want


def _stdio_passed(stdout: str, expected: str) -> bool:
    got, want = stdout.split(), expected.split()
    return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))


def _call_passed(stdout: str, expected: Any) -> bool:
    _, marked, result = stdout.rpartition(MARKER)
    if not marked:
        return False
    try:
        value = json.loads(result)
    except ValueError:
        return False
    return _same_value(value, expected) or _same_value([value], expected)


class CodeReward:
    """The code check; a TRL reward function when called, a judge through `judge` (see the module docstring).

    The sandbox is probed when the reward is made, so a run without one fails before any work.
    """

    def __init__(self, tests_column: str = "tests", max_tests: int = 16, cpu_seconds: int = 5, all_or_nothing: bool = False,
                 allow_unsandboxed: bool = False, workers: int | None = None, memory_mb: int = 512, bwrap: str = "bwrap") -> None:
        if max_tests < 1 or cpu_seconds < 1:
            raise ValueError("max_tests and cpu_seconds must be at least 1")
        self.name = "code"
        self.__name__ = "code_reward"  # TRL logs a reward function under its __name__
        self.tests_column = tests_column
        self.max_tests = max_tests
        self.all_or_nothing = all_or_nothing
        self.columns = (tests_column, "finish_reason")
        """The dataset columns this reward reads; every other keyword is ignored."""
        limits = Limits(cpu_seconds=cpu_seconds, wall_seconds=2.0 * cpu_seconds + 2.0, memory_mb=memory_mb)
        self.sandbox = Sandbox(limits, workers=workers, bwrap=os.environ.get("R1DISTILL_BWRAP", bwrap), allow_unsandboxed=allow_unsandboxed)

    def judge(self, completions: list, **columns: Any) -> list[Judgement]:
        """One Judgement per completion; reads only `self.columns` of `columns`. Raises ValueError on tests in no known layout."""
        rows = list(aligned_rows(completions, tests=columns.get(self.tests_column), finish_reason=columns.get("finish_reason")))
        results: list[Judgement | None] = [None] * len(rows)
        jobs: list[Job] = []
        owners: list[tuple[int, Tests, Any]] = []
        for i, (text, value, reason) in enumerate(rows):
            try:
                tests = parse_tests(value, self.max_tests)
            except ValueError as err:
                raise ValueError(f"column {self.tests_column!r}, row {i}: {err}") from None
            code = extract_code(answer_region(text, reason))
            if tests is None:
                results[i] = NO_TESTS
            elif code is None:
                results[i] = Judgement(0.0, "no_code")
            elif not _compiles(code):
                results[i] = Judgement(0.0, "compile_error")
            else:
                for job, expected in _jobs(code, tests):
                    jobs.append(job)
                    owners.append((i, tests, expected))
        outcomes: dict[int, list[str]] = {}
        for (i, tests, expected), result in zip(owners, self.sandbox.map(jobs)):
            outcomes.setdefault(i, []).extend(_outcomes(tests, expected, result))
        for i, found in outcomes.items():
            results[i] = self._verdict(found)
        return results  # type: ignore[return-value]

    def _verdict(self, outcomes: list[str]) -> Judgement:
        share = outcomes.count("passed") / len(outcomes) if outcomes else 0.0
        score = float(share == 1.0) if self.all_or_nothing else share
        if outcomes and share == 1.0:
            return Judgement(1.0, "passed")
        verdict = next((kind for kind in ("timeout", "runtime_error") if kind in outcomes), "failed")
        return Judgement(score, verdict)

    def __call__(self, completions: list, **columns: Any) -> list[float | None]:
        return [judgement.score for judgement in self.judge(completions, **columns)]

    def close(self) -> None:
        """Nothing to release: every sandbox ends with its run."""

    def __enter__(self) -> CodeReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _compiles(code: str) -> bool:
    # Parsed, not compiled, here: parsing folds no constants, so hostile code costs its length only.
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _jobs(code: str, tests: Tests) -> list[tuple[Job, Any]]:
    if tests.kind == "stdio":
        return [(Job(code, "stdio", stdin=given), expected) for given, expected in tests.cases]
    if tests.kind == "call":
        return [(Job(code, "call", stdin=json.dumps(given), name=tests.name), expected) for given, expected in tests.cases]
    nonce = secrets.token_hex(8)
    return [(Job(code, "assert", stdin=nonce, name=tests.name, files=(("test.py", tests.file),)), nonce)]


def _outcomes(tests: Tests, expected: Any, result) -> list[str]:
    """passed, failed, runtime_error or timeout per test of one run (an assert file's run holds many)."""
    if result.timed_out:
        return ["timeout"]
    if tests.kind == "assert":
        lines = result.stdout.splitlines()
        count = next((line.split()[-1] for line in reversed(lines) if line.startswith(f"{expected} tests ")), None)
        if result.returncode != 0 or count is None or not count.isdigit():
            return ["runtime_error"]
        passed = sum(1 for line in lines if line.startswith(f"{expected} ") and line.endswith(" ok"))
        total = max(int(count), 1)
        return ["passed"] * min(passed, total) + ["failed"] * (total - min(passed, total))
    if result.returncode != 0:
        return ["runtime_error"]
    passed = _stdio_passed(result.stdout, expected) if tests.kind == "stdio" else _call_passed(result.stdout, expected)
    return ["passed" if passed else "failed"]
