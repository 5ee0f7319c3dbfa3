"""eval: the estimators by hand, scoring tables made elsewhere, budget forcing, two models end to end,
kill -9 and resume, a larger -n, and bad input.

Run alone: python -m pytest -q tests/test_eval.py
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import run_cli, write_jsonl
from r1distill.cli import app
from r1distill.eval.benchmarks import load_benchmark
from r1distill.eval.config import EvalConfig
from r1distill.eval.metrics import pass_at_k
from r1distill.eval.run import evaluate


def test_pass_at_k_against_values_computed_by_hand():
    # n=5, c=2: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 2, 5) == 1.0  # k = n: some sample is correct
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 0, 1) == 0.0  # c = 0
    assert pass_at_k(4, 4, 1) == 1.0


def _answer(text: str) -> str:
    return f"<think>\nworking\n</think>\n\nSo the answer is \\boxed{{{text}}}."


def test_completions_made_elsewhere_are_scored_with_known_counts(tmp_path):
    rows = (
        # 2 of 4 correct; one has no answer (the thinking never closed), one was cut off mid-response
        [{"problem": "2+2?", "answer": "4", "completion": _answer(a), "finish_reason": "stop"} for a in ("4", "4", "5")]
        + [{"problem": "2+2?", "answer": "4", "completion": "<think>\nstill going", "finish_reason": "length"}]
        # 1 of 4 correct, written differently from the gold
        + [{"problem": "half?", "answer": "\\frac{1}{2}", "completion": _answer(a), "finish_reason": "stop"} for a in ("0.5", "3", "3", "2")]
    )
    table = tmp_path / "made-elsewhere.jsonl"
    write_jsonl(table, [row | {"level": "easy" if row["problem"] == "2+2?" else "hard"} for row in rows])
    summary = evaluate(EvalConfig(completions=str(table), output=str(tmp_path / "out"), group_by=["level"], workers=1))
    [entry] = summary.results["models"]
    assert entry["model"] == "made-elsewhere.jsonl"
    found = entry["metrics"]
    assert (found["problems"], found["samples"], found["n"]) == (2, 8, 4)
    assert found["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert found["pass@k"]["2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    assert found["pass@k"]["4"] == 1.0
    assert (found["truncated"], found["no_answer"], found["timeout"]) == (1 / 8, 1 / 8, 0.0)
    # maj@4: "4" wins the first problem 2 to 1; "3" wins the second 2 to 1.
    assert found["maj@k"]["4"] == 0.5
    assert entry["groups"]["level"]["easy"]["pass@1"] == 0.5 and entry["groups"]["level"]["hard"]["pass@1"] == 0.25
    samples = pl.read_parquet(tmp_path / "out" / "samples.parquet")
    assert samples.filter(pl.col("problem") == "half?")["verdict"].to_list() == ["correct", "incorrect", "incorrect", "incorrect"]
    assert samples["sample"].to_list() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["models"][0]["metrics"] == found


def test_majority_vote_breaks_ties_by_the_first_answer_and_groups_equivalent_answers(tmp_path):
    rows = (
        # gold 7: "1/2" and "0.5" are one answer (Math-Verify decides) with 2 votes against 7's one
        [{"model": "equivalent", "problem": "p", "answer": "7", "completion": _answer(a)} for a in ("7", "1/2", "0.5")]
        # gold 5: 3 and 5 tie 2-2; the answer stated first (3) wins
        + [{"model": "tie", "problem": "q", "answer": "5", "completion": _answer(a)} for a in ("3", "5", "5", "3")]
    )
    table = write_jsonl(tmp_path / "votes.jsonl", rows)
    summary = evaluate(EvalConfig(completions=str(table), output=str(tmp_path / "out"), workers=1))
    by_model = {entry["model"]: entry["metrics"] for entry in summary.results["models"]}
    assert by_model["equivalent"]["maj@k"]["3"] == 0.0
    assert by_model["equivalent"]["pass@1"] == pytest.approx(1 / 3)
    # groups of 2: [3, 5] is a tie won by 3, [5, 3] one won by 5
    assert by_model["tie"]["maj@k"] == {"1": 0.5, "2": 0.5, "4": 0.0}
    votes = pl.read_parquet(tmp_path / "out" / "samples.parquet").filter(pl.col("model") == "equivalent")["vote"].to_list()
    assert votes[1] == votes[2] != votes[0]


def _problems(tmp_path: Path, count: int, **extra) -> Path:
    return write_jsonl(tmp_path / "bench.jsonl", [{"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i), **extra} for i in range(count)])


def test_budget_forcing_cuts_the_thinking_at_the_budget_on_a_local_model(tmp_path, tiny_model, caplog):
    # The random model never closes its thinking: every sample is forced at its budget.
    bench = _problems(tmp_path, 2)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    cfg = EvalConfig(benchmark=str(bench), output=str(tmp_path / "out"), models=[str(tiny_model), str(other)], num_samples=1, max_tokens=8,
                     thinking_budget="4,8", answer_tokens=3, workers=1)
    with caplog.at_level(logging.INFO, logger="r1distill.backends.hf"):
        summary = evaluate(cfg)
    # Each model loaded once for its uncapped run and both budgets' two requests (five generate runs),
    # and released before the next one loads.
    assert [r.getMessage() for r in caplog.records if r.name == "r1distill.backends.hf"] == [
        f"loaded {tiny_model} on cpu", f"released {tiny_model}", f"loaded {other} on cpu", f"released {other}",
    ]
    samples = pl.read_parquet(tmp_path / "out" / "samples.parquet").filter(pl.col("model") == str(tiny_model))
    for budget in (4, 8):
        part = samples.filter(pl.col("budget") == budget)
        assert part.height == 2 and part["forced"].all()
        assert part["thinking_tokens"].to_list() == [budget, budget]
        assert all(c.startswith("<think>\n") and "\n</think>\n\nFinal answer:" in c for c in part["completion"])
        assert all(r.startswith("Final answer:") for r in part["response"])
        assert all(budget < tokens <= budget + 3 for tokens in part["completion_tokens"])
    curve = summary.results["models"][0]["thinking_budget"]
    assert [point["budget"] for point in curve["forced"]] == [4, 8]
    assert [point["mean_thinking_tokens"] for point in curve["forced"]] == [4.0, 8.0]
    assert [point["max_tokens"] for point in curve["cut"]] == [4, 8] and curve["cut"][0]["cut"] == 1.0


def test_budget_forcing_over_the_completions_endpoint_yields_an_answer_and_keeps_early_thoughts(tmp_path, fake_server, tiny_think_model):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": "cut", "problem": "Hard [[cut]]", "answer": "42"}, {"id": "early", "problem": "Easy", "answer": "42"}])
    cfg = EvalConfig(benchmark=str(bench), output=str(tmp_path / "out"), models=["served"], backend="openai", base_urls=[fake_server.url],
                     num_samples=1, max_tokens=64, thinking_budget="16", tokenizer=str(tiny_think_model), workers=1)
    evaluate(cfg)
    forced = pl.read_parquet(tmp_path / "out" / "samples.parquet").filter(pl.col("budget") == 16)
    rows = {row["prompt_id"]: row for row in forced.iter_rows(named=True)}
    assert rows["cut"]["forced"] and rows["cut"]["completion"] == "<think>\n Let me think about it some more\n</think>\n\nFinal answer: 42"
    assert rows["cut"]["verdict"] == "correct" and rows["cut"]["thinking_tokens"] is not None
    assert not rows["early"]["forced"] and rows["early"]["completion"].endswith("</think> <answer> 42 </answer>")
    raw = [r["body"]["prompt"] for r in fake_server.requests if r["path"] == "/v1/completions"]
    # The think template pre-fills <think>: not opened twice; the continuation starts from the forced prefix.
    assert sum(p.endswith("<|im_start|>assistant\n<think>\n") for p in raw) == 2
    assert sum(p.endswith("Final answer:") for p in raw) == 1


def test_two_models_end_to_end_through_the_cli(tmp_path, tiny_model, tiny_think_model):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"problem": f"What is {i} + 1?", "answer": str(i + 1), "level": i % 2} for i in range(3)])
    out = tmp_path / "out"
    result = run_cli("eval", str(bench), "-o", str(out), "--model", str(tiny_model), "--model", str(tiny_think_model), "-n", "2",
                     "--max-tokens", "6", "--group-by", "level", "--workers", "1")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert [entry["model"] for entry in results["models"]] == [str(tiny_model), str(tiny_think_model)]
    first, second = (entry for entry in results["models"])
    assert first["metrics"]["samples"] == second["metrics"]["samples"] == 6 and first["metrics"]["n"] == 2
    assert set(first["metrics"]["pass@k"]) == {"1", "2"} and set(first["groups"]["level"]) == {"0", "1"}
    assert first["settings"]["weights_sha256"] != second["settings"]["weights_sha256"]
    assert first["settings"]["chat_template_sha256"] != second["settings"]["chat_template_sha256"]
    settings = results["settings"]
    assert (settings["n"], settings["max_tokens"], settings["temperature"], settings["backend"]) == (2, 6, 0.6, "transformers")
    assert {"r1distill", "math-verify", "torch", "transformers"} <= set(settings["versions"])
    samples = pl.read_parquet(out / "samples.parquet")
    assert samples.height == 12 and samples["verdict"].null_count() == 0
    # The table: models side by side.
    assert "pass@1" in result.stderr and tiny_think_model.name in result.stderr


def _persisted(out: Path) -> int:
    shards = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in out.glob("generations/*/samples/traces-*.parquet"))
    journals = 0
    for path in out.glob("generations/*/samples/.journal/*/*.jsonl"):
        try:
            journals += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return shards + journals


def test_a_killed_eval_resumes_without_redoing_finished_samples(tmp_path, fake_server):
    fake_server.delay = 0.03
    bench = _problems(tmp_path, 60)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "r1distill.cli", "eval", str(bench), "-o", str(out), "-m", "served", "--backend", "openai",
            "--base-url", fake_server.url, "-n", "2", "--concurrency", "4", "--workers", "1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _persisted(out) < 40:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _persisted(out) < 120 and not (out / "results.json").exists()
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert 120 <= fake_server.served <= 120 + 4  # only the requests in flight at the kill were made twice
    results = json.loads((out / "results.json").read_text())
    assert results["models"][0]["metrics"]["samples"] == 120 and results["models"][0]["metrics"]["pass@1"] == pytest.approx(1 / 60)


def test_a_larger_n_adds_only_the_new_samples_and_compare_names_what_differs(tmp_path, fake_server):
    bench = _problems(tmp_path, 5)
    cfg = EvalConfig(benchmark=str(bench), output=str(tmp_path / "out"), models=["served"], backend="openai", base_urls=[fake_server.url],
                     num_samples=2, workers=1)
    evaluate(cfg)
    assert fake_server.served == 10
    shutil.copy(tmp_path / "out" / "results.json", tmp_path / "n2.json")
    summary = evaluate(dataclasses.replace(cfg, num_samples=4, compare=[str(tmp_path / "n2.json")]))
    assert fake_server.served == 20
    metrics = summary.results["models"][0]["metrics"]
    assert (metrics["samples"], metrics["n"], sorted(metrics["pass@k"])) == (20, 4, ["1", "2", "4"])
    assert summary.compared[0]["differences"] == ["n: 4 here, 2 there"]


runner = CliRunner()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: write_jsonl(d / "b.jsonl", [{"problem": "1+1?"}]), [], "no column 'answer'"),
        (lambda d: write_jsonl(d / "b.jsonl", [{"problem": "1+1?", "answer": None}]), [], "holds no gold answers"),
        (lambda d: "math5000", [], "unknown benchmark 'math5000'"),
        (lambda d: "math500", ["--thinking-budget", "512,256"], "--thinking-budget must be increasing positive integers"),
        (lambda d: "math500", ["--thinking-budget", "0,256"], "--thinking-budget must be increasing positive integers"),
        (lambda d: "math500", ["--thinking-budget", "many"], "--thinking-budget must be increasing positive integers"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, make, args, message):
    out = tmp_path / "out"
    # The openai backend reads the benchmark before it asks the server anything, and needs no training extra.
    result = runner.invoke(app, ["eval", str(make(tmp_path)), "-o", str(out), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", *args])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not out.exists()


def test_short_named_benchmarks_read_a_local_copy_the_same_way(tmp_path):
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Sum?", "answer": "1,000 + 234 = <<1234>>\n#### 1,234"}])
    prompts, read = load_benchmark(EvalConfig(benchmark=str(gsm8k), like="gsm8k", output="unused"))
    assert prompts["answer"].to_list() == ["1234"] and prompts["problem"].to_list() == ["Sum?"] and read["accuracy"] == "math"
    row = {"Question": "Which gas?", "Correct Answer": "argon", "Incorrect Answer 1": "neon", "Incorrect Answer 2": "xenon", "Incorrect Answer 3": "radon"}
    gpqa = write_jsonl(tmp_path / "gpqa.jsonl", [row])
    cfg = EvalConfig(benchmark=str(gpqa), like="gpqa-diamond", output="unused")
    prompts, read = load_benchmark(cfg)
    [problem], [letter] = prompts["problem"].to_list(), prompts["answer"].to_list()
    assert read["accuracy"] == "choice" and f"{letter}) argon" in problem.splitlines()
    assert sorted(line[3:] for line in problem.splitlines()[2:]) == ["argon", "neon", "radon", "xenon"]
    assert load_benchmark(cfg)[0]["problem"].to_list() == [problem], "the shuffle is the same every time"
