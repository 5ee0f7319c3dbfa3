"""Answers of more than 4,300 digits, which Python refuses to turn into an int: a verdict like any other.

The fast path leaves them to Math-Verify in a worker (which converts them), in filter, eval and rl alike.

    python -m pytest tests/test_big_numbers.py -q
"""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill.cli import app
from r1distill.rewards import rule
from r1distill.rl.rewards import PolicyReward, Rollouts

BIG = "9" * 5_000
NEAR = "9" * 4_999 + "8"
# (gold, stated answer, verdict): equal as text, a digit apart, small against big, big against small.
CASES = [(BIG, BIG, "correct"), (BIG, NEAR, "incorrect"), (BIG, "3", "incorrect"), ("3", BIG, "incorrect")]


def _completion(answer: str) -> str:
    return f"<think>\nworking\n</think>\n\nSo the answer is \\boxed{{{answer}}}."


def _rows() -> list[dict]:
    return [
        {"id": f"p{i}:0", "prompt_id": f"p{i}", "problem": f"Problem {i}?", "answer": gold, "completion": _completion(stated), "finish_reason": "stop"}
        for i, (gold, stated, _) in enumerate(CASES)
    ]


runner = CliRunner()


def test_filter_gives_big_numbers_their_verdicts(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["filter", str(write_jsonl(tmp_path / "traces.jsonl", _rows())), "-o", str(out), "--check", "accuracy", "--workers", "1", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    scored = pl.read_parquet(out / "scored")
    assert scored.sort("id")["accuracy_verdict"].to_list() == [verdict for _, _, verdict in CASES]


def test_eval_gives_big_numbers_their_verdicts(tmp_path):
    out = tmp_path / "out"
    rows = _rows() + [{**_rows()[1], "id": "p1:1"}]  # two samples of one problem: the vote compares big numbers too
    result = runner.invoke(app, ["eval", "--completions", str(write_jsonl(tmp_path / "made.jsonl", rows)), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    samples = pl.read_parquet(out / "samples.parquet").sort("problem", "sample")
    assert samples["verdict"].to_list() == ["correct", "incorrect", "incorrect", "incorrect", "incorrect"]
    assert json.loads((out / "results.json").read_text())["models"][0]["metrics"]["pass@1"] == 0.25


def test_the_rl_reward_gives_big_numbers_their_scores():
    end = 2  # any stop token id: the completions below all end with it
    with rule("accuracy", workers=1, timeout=20) as accuracy:
        reward = PolicyReward(accuracy, {end}, prefilled_think=False, rollouts=Rollouts(), first=True)
        scores = reward(prompts=["q"] * len(CASES), completions=[_completion(stated) for _, stated, _ in CASES],
                        completion_ids=[[end]] * len(CASES), answer=[gold for gold, _, _ in CASES])
    assert scores == [1.0, 0.0, 0.0, 0.0]
