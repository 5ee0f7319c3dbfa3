"""The filter stage end to end on hand-made traces: funnel, selection, mixing, layout, card, push."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill.cli import app
from r1distill.errors import UsageError
from r1distill.filter.run import FilterConfig, filter_traces

GOOD = "Let me add the numbers step by step. Two plus two makes four."


def _trace(prompt_id: str, sample: int, problem: str, answer: str | None, boxed: str, reasoning: str = GOOD, finish: str = "stop", tokens: int = 50) -> dict:
    completion = f"<think>\n{reasoning}\n</think>\n\nThe answer is \\boxed{{{boxed}}}."
    return {
        "id": f"{prompt_id}:{sample}", "prompt_id": prompt_id, "sample": sample, "problem": problem, "answer": answer,
        "prompt": [{"role": "user", "content": problem + "\nPlease reason step by step."}],
        "completion": completion, "reasoning": reasoning, "response": f"The answer is \\boxed{{{boxed}}}.",
        "finish_reason": finish, "completion_tokens": tokens, "model": "teacher",
    }


def _traces(folder: Path) -> Path:
    rows = [
        # p1: 4 samples, 3 correct (one in another form), one wrong: pass rate 0.75.
        _trace("p1", 0, "What is 2+2 when you add them together?", "4", "4", tokens=40),
        _trace("p1", 1, "What is 2+2 when you add them together?", "4", "4.0", tokens=20),
        _trace("p1", 2, "What is 2+2 when you add them together?", "4", "5", tokens=10),
        _trace("p1", 3, "What is 2+2 when you add them together?", "4", "4", tokens=30),
        # p2: every sample fails something other than accuracy.
        _trace("p2", 0, "Compute one half as a fraction please now.", "\\frac{1}{2}", "0.5", reasoning="我们 先 计算 这个 问题 然后 得到 答案 one half"),
        _trace("p2", 1, "Compute one half as a fraction please now.", "\\frac{1}{2}", "\\frac{1}{2}", finish="length"),
        _trace("p2", 2, "Compute one half as a fraction please now.", "\\frac{1}{2}", "\\frac{1}{2}", reasoning="loop " * 400),
        # p3 repeats p1's problem with other spacing and case: a duplicate prompt.
        _trace("p3", 0, "what is 2+2  when you add them together?", "4", "4"),
        # p4 is a benchmark question: contaminated.
        _trace("p4", 0, "Find the number of positive divisors of 2024 that are perfect squares.", "2", "2"),
    ]
    broken = _trace("p5", 0, "Name the smallest prime number of all primes.", "2", "2")
    broken["completion"] = "The answer is \\boxed{2}."
    broken["reasoning"], broken["response"] = None, broken["completion"]
    rows.append(broken)
    folder.mkdir()
    pl.DataFrame(rows[:5]).write_parquet(folder / "traces-a.parquet")
    pl.DataFrame(rows[5:]).write_parquet(folder / "traces-b.parquet")
    return folder


def _benchmark(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "aime_mini.jsonl", [{"question": "Find the number of positive divisors of 2024 that are perfect squares."}])


def test_funnel_selection_layout_and_card(tmp_path):
    traces = _traces(tmp_path / "traces")
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": f"hello {i}", "response": f"Hi there {i}!"} for i in range(10)])
    out = tmp_path / "sft"
    summary = filter_traces(FilterConfig(
        str(traces), str(out), decontaminate=[str(_benchmark(tmp_path))], non_reasoning=str(chat), non_reasoning_ratio=1.0, no_think="empty", workers=1,
    ))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == summary.rows_in == 10
    assert stats["dropped"] == {"accuracy": 1, "language": 1, "truncated": 1, "repetition": 1, "duplicate": 1, "contaminated": 1, "format": 1}
    assert stats["kept"] == {"reasoning": 3, "non_reasoning": 3}
    assert stats["contaminated_by_benchmark"] == {"aime_mini": 1}
    assert stats["verdicts"]["accuracy"]["correct"] >= 3

    scored = pl.read_parquet(out / "scored" / "*.parquet")
    assert scored.height == 10 and set(scored.filter("keep")["id"]) == {"p1:0", "p1:1", "p1:3"}
    assert scored.filter(pl.col("prompt_id") == "p1")["pass_rate"].unique().to_list() == [0.75]
    assert scored.filter(pl.col("id") == "p2:0")["language_verdict"].item() == "mixed"

    loaded = datasets.load_dataset(str(out), split="train")
    assert loaded.num_rows == 6
    kinds = loaded["kind"]
    assert kinds.count("reasoning") == 3 and kinds.count("non_reasoning") == 3
    reasoning = [r for r in loaded if r["kind"] == "reasoning"][0]
    assert reasoning["messages"][-1]["content"] == f"<think>\n{GOOD}\n</think>\n\nThe answer is \\boxed{{{4 if reasoning['id'] != 'p1:1' else '4.0'}}}."
    assert reasoning["messages"][0] == {"role": "user", "content": "What is 2+2 when you add them together?\nPlease reason step by step."}
    chatty = [r for r in loaded if r["kind"] == "non_reasoning"][0]
    assert chatty["messages"][-1]["content"].startswith("<think>\n\n</think>\n\nHi there")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "| dropped: contaminated | 1 |" in card
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-{i:05d}-of-00002.parquet" for i in range(2)]


@pytest.mark.parametrize("keep, expected", [("first:1", {"p1:0"}), ("shortest:2", {"p1:1", "p1:3"}), ("all", {"p1:0", "p1:1", "p1:3"})])
def test_rejection_sampling_policies(tmp_path, keep, expected):
    out = tmp_path / "out"
    filter_traces(FilterConfig(str(_traces(tmp_path / "t")), str(out), keep=keep, workers=1))
    # p4 (not decontaminated here) has one passing sample, kept by every policy.
    assert set(pl.read_parquet(out / "data" / "*.parquet")["id"]) == expected | {"p4:0"}


def test_pass_rate_band_and_rl_prompt_sets(tmp_path):
    out = tmp_path / "out"
    filter_traces(FilterConfig(str(_traces(tmp_path / "t")), str(out), max_pass_rate=0.8, checks=["accuracy"], dedup="none", workers=1))
    stats = json.loads((out / "stats.json").read_text())
    # Only accuracy is checked: p2 (3 of 3), p3, p4 and p5 (1 of 1) are too easy; p1 (3 of 4) stays.
    assert stats["dropped"] == {"pass_rate_too_high": 3 + 1 + 1 + 1, "accuracy": 1}
    assert set(pl.read_parquet(out / "data" / "*.parquet")["id"]) == {"p1:0", "p1:1", "p1:3"}
    assert stats["pass_rate_histogram"]["0.7-0.8"] == 1 and stats["pass_rate_histogram"]["0.9-1.0"] == 4


def test_a_pathological_answer_is_cut_off_and_the_run_goes_on(tmp_path):
    rows = [_trace("q1", 0, "Evaluate this tower of nines exactly.", "1", "9^{9^{9^{9}}}"), _trace("q2", 0, "What is three plus four?", "7", "7")]
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    filter_traces(FilterConfig(str(source), str(out), timeout=1.0, workers=1))
    scored = pl.read_parquet(out / "scored" / "*.parquet").sort("id")
    assert scored["accuracy_verdict"].to_list() == ["timeout", "correct"]
    assert pl.read_parquet(out / "data" / "*.parquet")["id"].to_list() == ["q2:0"]


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    runner = CliRunner()
    no_completion = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q"}])
    cases = {
        "missing": ([str(tmp_path / "nope.parquet")], "no such file"),
        "no completion": ([str(no_completion)], "no column 'completion'"),
        "bad keep": ([str(_traces(tmp_path / "t")), "--keep", "best:2"], "--keep"),
        "bad check": ([str(tmp_path / "t"), "--check", "vibes"], "--check 'vibes'"),
        "ratio without file": ([str(tmp_path / "t"), "--non-reasoning-ratio", "0.3"], "--non-reasoning"),
    }
    for name, (args, needle) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = runner.invoke(app, ["filter", *args, "-o", str(out)])
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.count("\n") == 1 and needle in result.stderr, (name, result.stderr)
        assert not out.exists(), name


def test_push_checks_everything_before_the_upload(tmp_path, monkeypatch):
    import huggingface_hub

    out = tmp_path / "out"
    filter_traces(FilterConfig(str(_traces(tmp_path / "t")), str(out), workers=1))
    runner = CliRunner()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = runner.invoke(app, ["push", str(out), "--repo-id", "me/set"])
    assert result.exit_code == 2 and "no Hugging Face token" in result.stderr
    result = runner.invoke(app, ["push", str(out), "--repo-id", "not a repo id!"])
    assert result.exit_code == 2 and "--repo-id" in result.stderr
    result = runner.invoke(app, ["push", str(tmp_path / "missing"), "--repo-id", "me/set"])
    assert result.exit_code == 2 and "no such folder" in result.stderr

    secret = "hf_SECRETTOKEN1234567890"
    calls = []
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: secret)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or f"https://hf.co/datasets/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    result = runner.invoke(app, ["push", str(out), "--repo-id", "me/set", "--private"])
    assert result.exit_code == 0, result.output
    assert calls[0] == ("create", "me/set", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(out) and "*.parquet" in calls[1][1]["allow_patterns"] and ".*" in calls[1][1]["ignore_patterns"]

    def refuse(self, **kw):
        raise RuntimeError(f"401 Unauthorized for token {secret}")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    result = runner.invoke(app, ["push", str(out), "--repo-id", "me/set"])
    assert result.exit_code == 2 and secret not in result.output and "401 Unauthorized" in result.stderr


@pytest.mark.parametrize("setting, expected", [({"non_reasoning_ratio": 0.25}, 2), ({"non_reasoning_count": 3}, 3), ({}, 4)])
def test_non_reasoning_mix_follows_ratio_or_count(tmp_path, setting, expected):
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"<think>\nhmm\n</think>\n\nhello {i}"}]} for i in range(4)])
    out = tmp_path / "out"
    filter_traces(FilterConfig(str(_traces(tmp_path / "t")), str(out), checks=["format"], non_reasoning=str(chat), **setting))
    rows = pl.read_parquet(out / "data" / "*.parquet")
    extra = rows.filter(pl.col("kind") == "non_reasoning")
    assert extra.height == expected
    # With the default rendering a non-reasoning answer carries no think block, even if the source had one.
    assert all(m[-1]["content"].startswith("hello ") for m in extra["messages"].to_list())
    # Only format is checked: p1's 4, p2's 3 and p4's 1 pass (p3 is a duplicate, p5 has no think block).
    assert rows.filter(pl.col("kind") == "reasoning").height == 8


def test_accuracy_mode_per_row_and_a_plain_text_prompt_column(tmp_path):
    rows = [
        {"id": "a", "problem": "Which is prime? (A) 4 (B) 7", "prompt": "Which is prime? (A) 4 (B) 7", "answer": "B", "kind_of_check": "choice",
         "completion": "<think>\n7 has no divisors but one and itself.\n</think>\n\nThe answer is (B)."},
        {"id": "b", "problem": "What is 3 squared?", "prompt": "What is 3 squared?", "answer": "9", "kind_of_check": "math",
         "completion": "<think>\nThree times three is nine.\n</think>\n\n\\boxed{9}"},
    ]
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    filter_traces(FilterConfig(str(source), str(out), accuracy_column="kind_of_check", workers=1))
    kept = pl.read_parquet(out / "data" / "*.parquet").sort("id")
    assert kept["id"].to_list() == ["a", "b"]
    assert kept["messages"][0][0] == {"role": "user", "content": rows[0]["problem"]}
    with pytest.raises(UsageError, match="no column 'nope'"):
        filter_traces(FilterConfig(str(source), str(tmp_path / "out2"), accuracy_column="nope"))


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(UsageError, match="exists and is not empty"):
        filter_traces(FilterConfig(str(_traces(tmp_path / "t")), str(target)))
