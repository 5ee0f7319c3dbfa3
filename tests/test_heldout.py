"""Held-out pass@1 during training (`--eval-every N --eval-prompts FILE`) in sft and rl, and in the report.

    PYTHONPATH=.. python -m pytest -q tests/test_heldout.py

The scripted tiny model writes the same answer, \\boxed{4}, to every prompt, and the learning rate is too
small to change that, so the score is known: of the golds 4, \\sqrt{16} (equal to 4 only for SymPy, in the
verifier's workers) and 5, two are right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SCRIPTED_ANSWER, SCRIPTED_THINKING, assert_usage_error, run_cli, write_jsonl
from r1distill.cli import app

pytestmark = pytest.mark.train

GOLDS = ["4", "\\sqrt{16}", "5"]


@pytest.fixture
def held_out(tmp_path) -> Path:
    return write_jsonl(tmp_path / "held-out.jsonl", [{"problem": f"Question {i}?", "answer": gold} for i, gold in enumerate(GOLDS)])


def _scores(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "eval_pass@1" in line]


def test_sft_scores_the_held_out_prompts_every_n_steps_with_the_verifier(tmp_path, tiny_scripted_model, held_out):
    assistant = f"<think>\n{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}"
    data = write_jsonl(tmp_path / "train.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": assistant}]} for i in range(4)])
    out = tmp_path / "sft"
    result = run_cli("sft", str(data), "-o", str(out), "--model", str(tiny_scripted_model), "--max-steps", "3", "--batch-size", "2",
                     "--max-length", "128", "--lr", "1e-9", "--eval-every", "2", "--eval-prompts", str(held_out), "--eval-max-tokens", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = _scores(out)
    # Every second step, and after the last one (3), not twice at a step.
    assert [s["step"] for s in scores] == [2, 3]
    for score in scores:
        assert score["eval_pass@1"] == pytest.approx(2 / 3) and score["eval_prompts"] == 3 and score["eval_unscored"] == 0
        assert score["eval_pass@1_stderr"] == pytest.approx((2 / 3 * 1 / 3 / 3) ** 0.5)
        # r1distill's template does not pre-fill <think>, and the script does not write one: no row passes the format.
        assert score["eval_format"] == 0.0 and score["eval_tokens"] > 0
    # The report's training section shows the last score and draws the curve.
    report = run_cli("report", str(out), "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    assert "held-out pass@1" in html and "66.7% ± 27.2% on 3 prompts at step 3" in html


def test_rl_scores_the_held_out_prompts_as_the_policy_is_prompted(tmp_path, tiny_scripted_model, held_out):
    out = tmp_path / "rl"
    result = run_cli("rl", str(held_out), "-o", str(out), "--model", str(tiny_scripted_model), "--max-steps", "2", "--batch-size", "2",
                     "--num-generations", "2", "--max-completion-length", "32", "--lr", "1e-9",
                     "--eval-every", "1", "--eval-prompts", str(held_out), "--eval-max-tokens", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = _scores(out)
    assert [s["step"] for s in scores] == [1, 2]
    # The model's own template pre-fills <think> (rl keeps it): the canonical answers pass the format check.
    assert all(s["eval_pass@1"] == pytest.approx(2 / 3) and s["eval_format"] == 1.0 for s in scores), scores


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--eval-every", "2"], "--eval-every and --eval-prompts go together"),
        (["--eval-every", "0", "--eval-prompts", "x.jsonl"], "--eval-every must be at least 1, got 0"),
        (["--eval-every", "1", "--eval-prompts", "x.jsonl", "--eval-max-tokens", "0"], "--eval-max-tokens must be at least 1, got 0"),
    ],
)
def test_bad_held_out_options_are_one_line(tmp_path, tiny_model, options, message):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?", "answer": "2"}])
    out = tmp_path / "out"
    for stage in ("sft", "rl"):
        assert_usage_error(CliRunner().invoke(app, [stage, str(data), "-o", str(out), "--model", str(tiny_model), *options]), message, out)


def test_a_held_out_table_without_answers_is_one_line_before_training(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?", "answer": "2"}])
    unanswered = write_jsonl(tmp_path / "held.jsonl", [{"problem": "1+1?"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["rl", str(data), "-o", str(out), "--model", str(tiny_model), "--eval-every", "1", "--eval-prompts", str(unanswered)])
    assert_usage_error(result, f"--eval-prompts {unanswered}: no column(s) answer (columns: problem)", out)
