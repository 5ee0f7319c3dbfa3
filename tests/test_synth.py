"""Synthetic tasks: the countdown and arithmetic generators and their checkers, hostile equations included,
and the format reward's R1-Zero layout.

    PYTHONPATH=.. python -m pytest -q tests/test_synth.py
"""

from __future__ import annotations

import json
import time

import polars as pl
import pytest
from typer.testing import CliRunner

from r1distill.cli import app
from r1distill.rewards import judge_arithmetic, judge_countdown, judge_format, rule
from r1distill.rewards.tasks import MAX_MAGNITUDE, evaluate_equation
from r1distill.synth.run import SynthConfig, synth

runner = CliRunner()


def countdown(answer: str, numbers=(3, 25, 50), target=75, finish="stop") -> str:
    """The verdict of one countdown answer given in an <answer> block."""
    [(_, verdict)] = judge_countdown([f"<think>\nhm\n</think>\n<answer>{answer}</answer>"], numbers=[list(numbers)], target=[target], finish_reason=[finish])
    return verdict


@pytest.mark.parametrize(("answer", "verdict"), [
    ("(50 - 25) * 3", "correct"),
    ("3 * (50 - 25) = 75", "correct"),  # the left side of an equation
    ("25 \\times 3", "correct"),  # LaTeX operators
    ("50 \\div 25 + 3", "wrong_result"),
    ("(50 + 25) / 3 * 3", "bad_numbers"),  # 3 used twice
    ("50 + 25", "correct"),  # every number at most once, not each exactly once
    ("50 + 25 + 1 - 1", "bad_numbers"),  # numbers that were not given
    ("50 + 3", "wrong_result"),
    ("50 / (25 - 25)", "division_by_zero"),
    ("9**9**9", "invalid_expression"),  # power is not an allowed operator, and never computed
    ("2**100000000", "invalid_expression"),
    ("9" * 150, "too_large"),  # a huge literal within the length bound
    ("1" * 10_000, "too_long"),  # longer than any equation: never parsed
    ("(" * 500 + "1" + ")" * 500, "too_long"),  # deep nesting
    ("(" * 20 + "50" + ")" * 20 + " + 25", "correct"),  # nesting within the bound is fine
    ("x + 25", "invalid_expression"),  # names
    ("__import__('os').system('true')", "invalid_expression"),  # calls and attribute access
    ("(50).real + 25", "invalid_expression"),  # attribute access on a literal
    ("[50][0] + 25", "invalid_expression"),  # subscripts
    ("50.0 + 25", "invalid_expression"),  # floats
    ("'50' * 25", "invalid_expression"),  # strings
    ("50 if 1 else 25", "invalid_expression"),
    ("lambda: 75", "invalid_expression"),
    ("50 +", "invalid_expression"),  # not an expression
])
def test_countdown_checker(answer, verdict):
    assert countdown(answer) == verdict


def test_countdown_numbers_stay_bounded_and_hostile_input_is_fast():
    # Intermediate results are bounded too: 10^6 * 10^6 * 10^6 is refused, not computed on and on.
    assert countdown("1000000 * 1000000 * 1000000", numbers=(1000000,) * 3, target=1) == "too_large"
    assert countdown(str(MAX_MAGNITUDE), numbers=(MAX_MAGNITUDE,), target=MAX_MAGNITUDE) == "correct"
    hostile = ["9**9**9**9", "1" * 1_000_000, "(" * 100_000, "-" * 100_000 + "1", "~1" * 50_000]
    started = time.monotonic()
    # (a boxed answer that opens more than ANSWER_CHARS before the end is not read at all: no_answer)
    assert {countdown(text) for text in hostile} <= {"invalid_expression", "too_long", "no_answer"}
    assert time.monotonic() - started < 30  # a hang would take far longer; the bound is not a benchmark


def test_countdown_reads_only_an_explicit_answer():
    assert countdown("", numbers=(1, 2), target=3) == "no_answer"
    # Thinking that never closes has no answer, whatever it says.
    [(_, verdict)] = judge_countdown(["<think>\n<answer>1 + 2</answer>"], numbers=[[1, 2]], target=[3])
    assert verdict == "no_answer"
    [(score, verdict)] = judge_countdown(["<answer>1 + 2</answer>"], numbers=[None], target=[3])
    assert (score, verdict) == (None, "no_gold")
    assert evaluate_equation("-(1 + 2) * -1") == (3, [1, 2, 1])


def test_arithmetic_checker():
    judged = judge_arithmetic([r"\boxed{-563}", r"\boxed{ 1,024 }", "<answer>12.0</answer>", r"\boxed{" + "9" * 40 + "}", "<think>\nit is 4"],
                              answer=["-563", "1024", "12", "9" * 40, "4"])
    assert [verdict for _, verdict in judged] == ["correct", "correct", "incorrect", "incorrect", "no_answer"]


def test_r1_zero_format():
    completions = [
        " <think> 2 and 2 </think> <answer> 4 </answer>",  # the R1-Zero layout
        "<think>2 and 2</think>\n<answer>4</answer>\n",
        "<think>2 and 2</think> The answer is 4.",  # no answer block
        "<think>2 and 2</think> <answer>4</answer> and more",  # text after the block
        "<think>2 and 2</think> <answer> </answer>",  # empty answer
        "<think>2 and 2</think> <answer>4</answer><answer>5</answer>",  # two blocks
        "<answer>4</answer>",  # no thinking
    ]
    verdicts = [verdict for _, verdict in judge_format(completions, layout="r1-zero")]
    assert verdicts == ["ok", "ok", "no_answer_block", "no_answer_block", "empty_answer", "no_answer_block", "missing_think"]
    # R1's layout accepts any answer text after the thinking.
    assert [verdict for _, verdict in judge_format(completions[:3])] == ["ok", "ok", "ok"]
    with pytest.raises(ValueError, match="unknown format layout"):
        rule("format", layout="r2")


@pytest.mark.parametrize("task", ["countdown", "arithmetic"])
def test_generated_problems_are_solved_by_their_answers(tmp_path, task):
    out = tmp_path / f"{task}.jsonl"
    result = runner.invoke(app, ["synth", task, "-n", "300", "-o", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 300 and len({row["problem"] for row in rows}) == 300 and len({row["id"] for row in rows}) == 300
    completions = [f"<think>\nsolved\n</think>\n<answer>{row['answer']}</answer>" for row in rows]
    with rule(task) as reward:
        scores = reward(completions, answer=[r["answer"] for r in rows], numbers=[r.get("numbers") for r in rows], target=[r.get("target") for r in rows])
    assert scores == [1.0] * 300
    # The same seed makes the same file; another seed another one.
    again = tmp_path / "again.jsonl"
    synth(SynthConfig(task, str(again), n=300, seed=3))
    assert again.read_text() == out.read_text()
    synth(SynthConfig(task, str(again), n=300, seed=4))
    assert again.read_text() != out.read_text()


def test_synth_options(tmp_path):
    # countdown: 3 to --numbers numbers up to --max-number; arithmetic: --difficulty operations; Parquet too.
    synth(SynthConfig("countdown", str(tmp_path / "c.parquet"), n=200, numbers=5, max_number=20))
    numbers = pl.read_parquet(tmp_path / "c.parquet")["numbers"].to_list()
    assert {len(n) for n in numbers} == {3, 4, 5} and max(max(n) for n in numbers) <= 20
    synth(SynthConfig("arithmetic", str(tmp_path / "a.jsonl"), n=50, difficulty=6))
    problems = [json.loads(line)["problem"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert all(sum(p.count(op) for op in " + - * ".split()) == 6 for p in problems)
    # --max-number bounds the operands of arithmetic too (the quickstart's single-digit sums).
    synth(SynthConfig("arithmetic", str(tmp_path / "small.jsonl"), n=40, difficulty=1, max_number=9))
    rows = [json.loads(line) for line in (tmp_path / "small.jsonl").read_text().splitlines()]
    operands = [int(word) for row in rows for word in row["problem"].removeprefix("Compute ").split() if word.isdigit()]
    assert len(operands) == 80 and set(operands) <= set(range(1, 10)) and len(set(operands)) > 5


def test_synth_refuses_bad_options_in_one_line(tmp_path):
    result = runner.invoke(app, ["synth", "sudoku", "-n", "0", "-o", str(tmp_path / "x.txt"), "--difficulty", "0"])
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for needle in ("TASK must be one of countdown, arithmetic", "-n must be at least 1", "--difficulty", ".jsonl or .parquet"):
        assert needle in line
    assert not (tmp_path / "x.txt").exists()
