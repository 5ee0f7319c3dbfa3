"""generate --thinking-budget (budget forcing): forced and unforced rows on a local model and a server, and
a run stopped between its two requests resumed at the second.

    PYTHONPATH=.. python -m pytest tests/test_thinking_budget.py -q
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from r1distill.generate import GenerateConfig, generate
from r1distill.generate.budget import step_folder
from r1distill.generate.store import read_rows
from tests.conftest import SCRIPTED_ANSWER, SCRIPTED_THINKING, run_cli, write_jsonl


def _traces(out: Path) -> dict[str, dict]:
    return {row["prompt_id"]: row for row in pl.read_parquet(out / "traces-*.parquet").iter_rows(named=True)}


def test_a_local_model_is_forced_at_the_budget_unless_it_closes_its_thinking_first(tmp_path, tiny_model, tiny_scripted_model):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "problem": "What is 2 + 2?", "answer": "4"}, {"id": "b", "problem": "What is 3 + 1?", "answer": "4"}])
    # The random model never closes its thinking: cut at 4 tokens, the tag and cue forced, then 3 answer tokens.
    result = run_cli("generate", str(source), "-o", str(tmp_path / "random"), "-m", str(tiny_model), "--thinking-budget", "4", "--max-tokens", "3")
    assert result.returncode == 0, result.stderr
    for row in _traces(tmp_path / "random").values():
        assert row["forced"] and row["completion"].startswith("<think>\n") and "\n</think>\n\nFinal answer:" in row["completion"]
        assert row["response"].startswith("Final answer:") and 4 < row["completion_tokens"] <= 7
        assert row["problem"].startswith("What is") and row["prompt"][-1]["content"].startswith("What is")
    assert json.loads((tmp_path / "random" / "manifest.json").read_text())["settings"]["thinking_budget"] == 4
    # The scripted model closes its thinking within 64 tokens and stops: kept as it wrote it.
    cfg = GenerateConfig(input=str(source), output=str(tmp_path / "scripted"), model=str(tiny_scripted_model), thinking_budget=64, max_tokens=8, temperature=0)
    assert generate(cfg).generated == 2
    for row in _traces(tmp_path / "scripted").values():
        assert not row["forced"] and row["finish_reason"] == "stop"
        assert row["completion"] == f"<think>\n{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}" and row["reasoning"] == SCRIPTED_THINKING


def test_a_server_gets_two_requests_for_a_cut_thinking_and_one_for_a_closed_one(tmp_path, fake_server, tiny_think_model):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "cut", "problem": "Hard [[cut]]", "answer": "42"}, {"id": "early", "problem": "Easy", "answer": "42"}])
    cfg = GenerateConfig(input=str(source), output=str(tmp_path / "out"), model="served", backend="openai", base_urls=[fake_server.url],
                         thinking_budget=16, max_tokens=32, tokenizer=str(tiny_think_model))
    summary = generate(cfg)
    assert (summary.present, summary.failed) == (2, 0)
    rows = _traces(tmp_path / "out")
    assert rows["cut"]["forced"] and rows["cut"]["completion"] == "<think>\n Let me think about it some more\n</think>\n\nFinal answer: 42"
    assert rows["cut"]["completion_tokens"] == 34 and rows["cut"]["response"] == "Final answer: 42"
    assert rows["early"]["forced"] is False and rows["early"]["completion"].endswith("</think> <answer> 42 </answer>")
    raw = [r["body"]["prompt"] for r in fake_server.requests if r["path"] == "/v1/completions"]
    assert sum(p.endswith("<|im_start|>assistant\n<think>\n") for p in raw) == 2 and sum(p.endswith("Final answer:") for p in raw) == 1
    assert [r["body"]["max_tokens"] for r in fake_server.requests] == [16, 16, 32]
    # A run without a budget records no forcing at all.
    plain = GenerateConfig(input=str(source), output=str(tmp_path / "plain"), model="served", backend="openai", base_urls=[fake_server.url])
    generate(plain)
    assert [row["forced"] for row in _traces(tmp_path / "plain").values()] == [None, None]


def test_a_run_killed_between_its_two_requests_resumes_at_the_second(tmp_path, fake_server, tiny_think_model):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "problem": f"Hard {i} [[cut]]", "answer": "42"} for i in range(3)])
    out = tmp_path / "out"
    args = ["generate", str(source), "-o", str(out), "-m", "served", "--backend", "openai", "--base-url", fake_server.url,
            "--thinking-budget", "16", "--max-tokens", "32", "--tokenizer", str(tiny_think_model)]
    fake_server.hold_continuations = True
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(r["body"]["prompt"].endswith("Final answer:") for r in list(fake_server.requests)):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(out.glob("traces-*.parquet"))
    assert read_rows(step_folder(out, "think"), ["id"]).height == 3
    thinking_requests = len(fake_server.requests) - sum(r["body"]["prompt"].endswith("Final answer:") for r in fake_server.requests)
    fake_server.hold_continuations = False
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    # The thinking was not asked for again; every row got its forced answer.
    assert len(fake_server.requests) - sum(r["body"]["prompt"].endswith("Final answer:") for r in fake_server.requests) == thinking_requests
    rows = _traces(out)
    assert sorted(rows) == ["q0", "q1", "q2"]
    assert all(row["forced"] and row["completion"].endswith("Final answer: 42") and row["finish_reason"] == "stop" for row in rows.values())
