"""The code reward: every verdict, every test layout, and its wiring into filter, eval and rl (real sandboxes).

    PYTHONPATH=.. python -m pytest tests/test_code_reward.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from r1distill.rewards import rule
from r1distill.rewards.code import CodeReward, extract_code, parse_tests
from r1distill.rewards.sandbox import SandboxUnavailable
from r1distill.synth.run import SynthConfig, synth

CALL = {"inputs": [[[1, 2, 3]], [[]], [[5, -5, 10]]], "outputs": [6, 0, 10], "fn_name": "f"}


def answer(code: str) -> str:
    """A completion in R1's layout whose response holds `code` in a python block."""
    return f"<think>\nSum them.\n</think>\n\nHere:\n```python\n{code}\n```"


@pytest.fixture(scope="module")
def code_reward() -> CodeReward:
    try:
        return CodeReward(cpu_seconds=1)
    except SandboxUnavailable as err:
        pytest.skip(str(err))


def verdicts(reward, completions, tests):
    return [(j.verdict, j.score) for j in reward.judge(completions, tests=tests)]


def test_call_based_tests_every_verdict(code_reward):
    completions = [
        answer("def f(xs):\n    return sum(xs)"),  # correct
        answer("def f(xs):\n    return sum(xs) if xs else 1"),  # wrong on one test of three
        answer("def f(xs):\n    return xs[0] + sum(xs[1:])"),  # crashes on the empty list, right elsewhere
        answer("def f(xs)\n    return sum(xs)"),  # missing colon
        answer("def f(xs):\n    while True:\n        pass"),  # never returns
        "<think>\nhm\n</think>\n\nJust add them.",  # no code block
        "<think>\n```python\ndef f(xs):\n    return sum(xs)\n```",  # code only in unclosed thinking
    ]
    got = verdicts(code_reward, completions, [json.dumps(CALL)] * len(completions))
    assert got == [
        ("passed", 1.0), ("failed", pytest.approx(2 / 3)), ("runtime_error", pytest.approx(2 / 3)), ("compile_error", 0.0),
        ("timeout", 0.0), ("no_code", 0.0), ("no_code", 0.0),
    ]


def test_stdio_tests_as_a_list_and_as_a_dict_of_lists(code_reward):
    listed = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]
    dicted = {"inputs": ["1.5 2.25\n"], "outputs": ["3.75000001\n"]}  # numbers compare within 1e-6
    program = answer("a, b = map(float, input().split())\ns = a + b\nprint(int(s) if s == int(s) else s)")
    assert verdicts(code_reward, [program, program], [listed, json.dumps(dicted)]) == [("passed", 1.0), ("passed", 1.0)]


def test_a_program_that_only_prints_the_expected_answer_of_another_test_fails(code_reward):
    listed = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6\n"}]
    assert verdicts(code_reward, [answer("print(5)")], [listed]) == [("failed", 0.5)]


def test_assert_files_pytest_style_and_humaneval_check(code_reward):
    kodcode = "from solution import f\n\ndef test_sum():\n    assert f([1, 2]) == 3\n\ndef test_empty():\n    assert f([]) == 0\n"
    humaneval = {"test": "def check(candidate):\n    assert candidate([4, 4]) == 8\n", "entry_point": "f"}
    right, wrong = answer("def f(xs):\n    return sum(xs)"), answer("def f(xs):\n    return sum(xs) or 1")
    got = verdicts(code_reward, [right, wrong, right, wrong], [kodcode, kodcode, humaneval, json.dumps({"test": humaneval["test"], "entry_point": "f"})])
    assert got == [("passed", 1.0), ("failed", 0.5), ("passed", 1.0), ("passed", 1.0)]


def test_all_or_nothing_and_rows_without_tests():
    try:
        reward = rule("code", all_or_nothing=True, cpu_seconds=1)
    except SandboxUnavailable as err:
        pytest.skip(str(err))
    wrong = answer("def f(xs):\n    return sum(xs) if xs else 1")
    assert reward([wrong, wrong], tests=[json.dumps(CALL), None]) == [0.0, None]


def test_the_longest_tests_are_kept():
    tests = parse_tests({"inputs": ["1\n", "22222\n", "333\n"], "outputs": ["1\n", "2\n", "3\n"]}, 2)
    assert [given for given, _ in tests.cases] == ["22222\n", "333\n"]


def test_tests_in_no_known_layout_name_the_column_and_row(code_reward):
    with pytest.raises(ValueError, match="column 'tests', row 1"):
        code_reward.judge([answer("pass")] * 2, tests=[json.dumps(CALL), json.dumps({"inputs": [1]})])


def test_code_extraction_is_bounded_and_takes_the_last_python_block():
    assert extract_code("```py\na = 1\n```\n```python\nb = 2\n```\n```text\n3\n```") == "b = 2"
    assert extract_code("```python\n" + "x" * 100_000 + "\n```") is None  # over MAX_CODE_CHARS
    assert extract_code("`" * 300_000) is None  # a wall of backticks costs one pass


# --- the stages ---------------------------------------------------------------------------------


def _code_table(tmp_path: Path, n: int = 4) -> Path:
    """synth code problems with one right and one wrong completion each, as generate writes traces."""
    prompts = tmp_path / "prompts.jsonl"
    synth(SynthConfig(task="code", output=str(prompts), n=n))
    rows = []
    for problem in pl.read_ndjson(prompts).to_dicts():
        for sample, code in enumerate((problem["answer"], "def f(xs):\n    return None\n")):
            rows.append({**problem, "id": f"{problem['id']}-{sample}", "sample": sample, "completion": answer(code), "finish_reason": "stop"})
    table = tmp_path / "traces.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1distill.cli", *args], capture_output=True, text=True, env=env or os.environ, timeout=300)


def test_filter_check_code_keeps_the_programs_that_pass(tmp_path, code_reward):
    table = _code_table(tmp_path)
    done = _cli("filter", str(table), "-o", str(tmp_path / "out"), "--check", "code", "--dedup", "none")
    assert done.returncode == 0, done.stderr
    scored = pl.read_parquet(tmp_path / "out" / "scored" / "scored-00000.parquet")
    assert scored.sort("id")["code_verdict"].to_list() == ["passed", "failed"] * 4
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["kept"]["reasoning"] == 4


def test_filter_check_code_refuses_without_a_sandbox(tmp_path):
    table = _code_table(tmp_path, n=1)
    env = {**os.environ, "R1DISTILL_BWRAP": str(tmp_path / "no-such-bwrap")}
    done = _cli("filter", str(table), "-o", str(tmp_path / "out"), "--check", "code", env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--allow-unsandboxed" in lines[0]
    assert not (tmp_path / "out").exists()
    allowed = _cli("filter", str(table), "-o", str(tmp_path / "out"), "--check", "code", "--allow-unsandboxed", env=env)
    assert allowed.returncode == 0, allowed.stderr


def test_eval_accuracy_code_over_completions(tmp_path, code_reward):
    table = _code_table(tmp_path)
    done = _cli("eval", "--completions", str(table), "-o", str(tmp_path / "eval"), "--accuracy", "code")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    [entry] = results["models"]
    assert entry["metrics"]["pass@1"] == pytest.approx(0.5)


@pytest.mark.train  # rl's modules import transformers
def test_rl_code_reward_scores_the_policy_completions(tmp_path, code_reward):
    from r1distill.rl.config import RLConfig
    from r1distill.rl.rewards import PolicyReward, Rollouts
    from r1distill.rl.run import _rules

    prompts = tmp_path / "prompts.jsonl"
    synth(SynthConfig(task="code", output=str(prompts), n=2))
    rows = pl.read_ndjson(prompts).to_dicts()
    cfg = RLConfig(input=str(prompts), output=str(tmp_path / "rl"), rewards=["code"], code_timeout=1)
    (code,), _ = _rules(cfg)
    reward = PolicyReward(code, stop_ids={0}, prefilled_think=False, rollouts=Rollouts(), first=True)
    completions = [answer(rows[0]["answer"]), answer("def f(xs):\n    while True:\n        pass")]
    scores = reward(["p", "p"], completions, [[5, 0], [5, 0]], tests=[rows[0]["tests"], rows[1]["tests"]], finish_reason=["length"] * 2)
    assert scores == [1.0, 0.0]
    assert [row["verdicts"]["code"] for row in reward.rollouts.samples(2)] == ["passed", "timeout"]
