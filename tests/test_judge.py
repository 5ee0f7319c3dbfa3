"""The LLM judge against the local fake OpenAI server, scripted to answer as a judge (its `reply` hook):
which rows go to it, its cache, an unparseable reply, server faults, secrets, bad options.

    PYTHONPATH=.. python -m pytest tests/test_judge.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import assert_usage_error, write_jsonl
from fake_openai import FakeOpenAI
from r1distill.cli import app
from r1distill.errors import UsageError
from r1distill.eval.config import EvalConfig
from r1distill.eval.run import evaluate
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.report import ReportConfig, report
from r1distill.rewards import rule
from r1distill.rewards.judge import CACHE_FILE, JUDGE_PROMPT, Judge, JudgedAccuracy, JudgeSettings
from r1distill.rl.rewards import PolicyReward, Rollouts

API_KEY = "sk-judge-planted-key-0123456789"
PROBLEM = "Which city is the capital of France, in a word?"


def _verdict(prompt: str) -> str:
    """A judge that reads the final answer shown to it: Paris is right, [[offformat]] gets a reply with no verdict line."""
    answer = prompt.split("## Final answer", 1)[1].split("Explain in", 1)[0]
    if "[[offformat]]" in prompt:
        return "I am not sure about this one."
    return "The answers name the same city.\nVERDICT: CORRECT" if "Paris" in answer else "They differ.\nVERDICT: INCORRECT"


@pytest.fixture
def judge_server():
    server = FakeOpenAI(reply=_verdict).start()
    yield server
    server.stop()


def _row(i: int, gold: str, response: str, problem: str = PROBLEM) -> dict:
    reasoning = "We recall the capital of France. It is Paris, and Paris is certain."
    return {
        "id": f"p{i}:0", "prompt_id": f"p{i}", "sample": 0, "problem": f"{problem} ({i})", "answer": gold,
        "completion": f"<think>\n{reasoning}\n</think>\n\n{response}", "finish_reason": "stop", "completion_tokens": 30,
    }


def _traces(tmp_path: Path, extra: list[dict] = ()) -> Path:
    rows = [
        _row(0, "4", "So \\boxed{4}."),  # the rule decides: correct
        _row(1, "4", "So \\boxed{5}."),  # the rule decides: incorrect
        _row(2, "Paris", "The capital is Paris."),  # no number to read as math: the judge says correct
        _row(3, "Paris", "The capital is Lyon."),  # same, the judge says incorrect
        *extra,
    ]
    return write_jsonl(tmp_path / "traces.jsonl", rows)


def _cfg(tmp_path: Path, server: FakeOpenAI, out: str = "out", **changes) -> FilterConfig:
    return FilterConfig(
        input=str(changes.pop("input", tmp_path / "traces.jsonl")), output=str(tmp_path / out), checks=["judge", "format"], dedup="none",
        judge_model="judge-model", judge_base_urls=[server.url], judge_retry_delay=0.01, **changes,
    )


def _scored(out: Path) -> dict[str, str]:
    scored = pl.read_parquet(out / "scored")
    return dict(zip(scored["id"].to_list(), scored["judge_verdict"].to_list()))


def test_only_rows_the_rules_cannot_decide_go_to_the_judge(tmp_path, judge_server):
    _traces(tmp_path)
    summary = filter_traces(_cfg(tmp_path, judge_server))
    assert len(judge_server.requests) == 2  # p2 and p3 only (the preflight is counted apart)
    prompts = [r["body"]["messages"][0]["content"] for r in judge_server.requests]
    assert all("We recall" not in p for p in prompts)  # never the thinking
    assert _scored(tmp_path / "out") == {"p0:0": "correct", "p1:0": "incorrect", "p2:0": "judge_correct", "p3:0": "judge_incorrect"}
    assert summary.kept == 2
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["decided_by"] == {"rule": 2, "judge": 2, "neither": 0}
    assert "decided by the rules / the judge / neither | 2 / 2 / 0" in (tmp_path / "out" / "README.md").read_text()


def test_always_sends_every_row_and_a_rerun_asks_nothing_twice(tmp_path, judge_server):
    _traces(tmp_path)
    filter_traces(_cfg(tmp_path, judge_server, judge_when="always"))
    assert len(judge_server.requests) == 4
    assert _scored(tmp_path / "out")["p0:0"] == "judge_incorrect"  # the judge's word counts where it was asked
    # A rerun into a new folder holding the first run's cache (a crashed run leaves only the cache).
    (tmp_path / "again").mkdir()
    (tmp_path / "out" / CACHE_FILE).rename(tmp_path / "again" / CACHE_FILE)
    filter_traces(_cfg(tmp_path, judge_server, out="again", judge_when="always"))
    assert len(judge_server.requests) == 4 and len(judge_server.preflights) == 1
    assert _scored(tmp_path / "again") == _scored(tmp_path / "out")
    assert len((tmp_path / "again" / CACHE_FILE).read_text().splitlines()) == 4


def test_a_reply_off_the_verdict_format_is_unparseable_never_a_guess(tmp_path, judge_server):
    _traces(tmp_path, [_row(4, "Paris", "Paris it is.", problem="[[offformat]] Which city?")])
    filter_traces(_cfg(tmp_path, judge_server))
    assert _scored(tmp_path / "out")["p4:0"] == "judge_unparseable"
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["decided_by"]["neither"] == 1


def test_server_faults_are_retried(tmp_path, judge_server):
    _traces(tmp_path, [_row(4, "Paris", "Paris it is.", problem="[[500x2]] Which city?")])
    filter_traces(_cfg(tmp_path, judge_server))
    assert _scored(tmp_path / "out")["p4:0"] == "judge_correct"
    assert len(judge_server.requests) == 5  # two 500s, then the answer, and p2, p3


def test_a_judge_that_keeps_failing_fails_the_run_and_keeps_the_verdicts_made(tmp_path, judge_server):
    _traces(tmp_path, [_row(4, "Paris", "Paris it is.", problem="[[fail]] Which city?")])
    runner = CliRunner()
    args = ["filter", str(tmp_path / "traces.jsonl"), "-o", str(tmp_path / "out"), "--check", "judge", "--judge-model", "j",
            "--judge-base-url", judge_server.url, "--dedup", "none", "--judge-max-retries", "1", "--judge-retry-delay", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "judge requests failed" in result.stderr, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == [CACHE_FILE]  # the two verdicts made are kept
    asked = len(judge_server.requests)
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert len(judge_server.requests) - asked == 2  # only the failing row is asked again (1 + 1 retry)


def test_no_key_in_any_output(tmp_path, judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", API_KEY)
    _traces(tmp_path)
    result = CliRunner().invoke(app, ["filter", str(tmp_path / "traces.jsonl"), "-o", str(tmp_path / "out"), "--check", "judge",
                                      "--judge-model", "j", "--judge-base-url", judge_server.url, "--judge-api-key-env", "JUDGE_API_KEY"])
    assert result.exit_code == 0, result.output
    assert {r["authorization"] for r in judge_server.requests} == {f"Bearer {API_KEY}"}  # it was sent
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(written) >= 4 and not [p for p in written if API_KEY.encode() in p.read_bytes()]
    assert API_KEY not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "judge"], "needs --judge-model"),
        (["--check", "judge", "--judge-model", "j"], "needs --judge-base-url"),
        (["--check", "judge", "--judge-model", "j", "--judge-base-url", "ftp://x"], "must start with http://"),
        (["--check", "judge", "--judge-model", "j", "--judge-base-url", "http://x/v1", "--judge-api-key-env", "HF_TOKEN"], "--judge-api-key-env HF_TOKEN"),
        (["--check", "judge", "--judge-model", "j", "--judge-base-url", "http://x/v1", "--judge-when", "often"], "--judge-when must be one of"),
        (["--check", "judge", "--judge-model", "j", "--judge-backend", "vllm"], "--judge-backend must be"),
        (["--check", "judge", "--check", "accuracy", "--judge-model", "j", "--judge-base-url", "http://x/v1"], "drop --check accuracy"),
        (["--judge-model", "j"], "need the judge check"),
    ],
)
def test_bad_judge_options_are_one_line(tmp_path, args, message):
    _traces(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["filter", str(tmp_path / "traces.jsonl"), "-o", str(out), *args])
    assert_usage_error(result, message, out)


def test_a_wrong_judge_key_is_one_line_before_anything_is_written(tmp_path):
    server = FakeOpenAI(refusal="Incorrect API key provided").start()
    try:
        _traces(tmp_path)
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["filter", str(tmp_path / "traces.jsonl"), "-o", str(out), "--check", "judge",
                                          "--judge-model", "j", "--judge-base-url", server.url])
        assert_usage_error(result, "judge: --judge-base-url", out)
    finally:
        server.stop()


def test_the_prompt_asks_for_the_verdict_line_it_parses():
    assert "VERDICT: CORRECT" in JUDGE_PROMPT and "VERDICT: INCORRECT" in JUDGE_PROMPT


def test_eval_reports_rule_judge_both_and_any_correct_and_the_disagreements(tmp_path, judge_server):
    _traces(tmp_path)  # rules: p0 correct, p1 incorrect; the judge says p0 incorrect ("4" is not Paris), p2 correct, p3 incorrect
    cfg = EvalConfig(completions=str(tmp_path / "traces.jsonl"), output=str(tmp_path / "eval"), accuracy="judge", judge_model="j",
                     judge_base_urls=[judge_server.url], judge_when="always", judge_retry_delay=0.01)
    results = evaluate(cfg).results
    found = results["models"][0]["metrics"]
    assert found["pass@1"] == 0.25  # the judge's word: only p2
    judged = found["judge"]
    assert (judged["rule_correct"], judged["judge_correct"], judged["both_correct"], judged["any_correct"]) == (0.25, 0.25, 0.0, 0.5)
    assert judged["disagreements"] == 1 and judged["disagreeing_samples"][0]["prompt_id"] == "p0"
    assert judged["judge_decided"] == 4 and results["settings"]["judge"]["when"] == "always"
    samples = pl.read_parquet(tmp_path / "eval" / "samples.parquet")
    assert samples.filter(pl.col("prompt_id") == "p2")["rule_verdict"].to_list() == ["no_answer"]
    # The default asks only about the undecided rows; a rerun in the same folder asks nothing.
    asked = len(judge_server.requests)
    cfg.judge_when = "unverifiable"
    found = evaluate(cfg).results["models"][0]["metrics"]
    assert len(judge_server.requests) == asked  # p2 and p3 are cached from the first run
    assert found["pass@1"] == 0.5 and found["judge"]["rule_decided"] == 2 and found["judge"]["disagreements"] == 0


def test_eval_judge_options_are_checked(tmp_path):
    _traces(tmp_path)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--completions", str(tmp_path / "traces.jsonl"), "-o", str(out), "--accuracy", "judge"])
    assert_usage_error(result, "needs --judge-model", out)


def test_the_report_counts_who_decided_and_shows_the_disagreements(tmp_path, judge_server):
    _traces(tmp_path)
    filter_traces(_cfg(tmp_path, judge_server))
    evaluate(EvalConfig(completions=str(tmp_path / "traces.jsonl"), output=str(tmp_path / "eval"), accuracy="judge", judge_model="j",
                        judge_base_urls=[judge_server.url], judge_when="always", judge_retry_delay=0.01))
    text = report(ReportConfig([str(tmp_path / "out"), str(tmp_path / "eval")], str(tmp_path / "report.html"))).read_text()
    assert "Judge check decided by" in text and "correct by either" in text
    disagreements = text.split("Rules and judge disagree", 1)[1].split("</table>", 1)[0]
    assert "p0" in disagreements and "judge_incorrect" in disagreements and "p2" not in disagreements


def _policy_judge(server: FakeOpenAI, deadline: float):
    settings = JudgeSettings(judge_model="j", judge_base_urls=[server.url], judge_retry_delay=0.01)
    judged = JudgedAccuracy(rule("accuracy", mode="math"), Judge(settings, None, deadline=deadline))
    return judged, PolicyReward(judged, {0}, prefilled_think=False, rollouts=Rollouts(), first=True)


def test_rl_judge_reward_reads_the_policys_prompt_and_a_slow_judge_never_stalls_a_step(tmp_path):
    chat = [[{"role": "assistant", "content": f"<think>\nhm\n</think>\n\n{answer}"}] for answer in ("\\boxed{4}", "It is Paris.")]
    call = {"prompts": [[{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "Capital of France?"}]],
            "completions": chat, "completion_ids": [[7, 0], [7, 0]], "answer": ["4", "Paris"]}
    server = FakeOpenAI(reply=_verdict).start()
    try:
        judged, reward = _policy_judge(server, deadline=30)
        with judged:
            logged = {}
            assert reward(**call, log_metric=logged.__setitem__) == [1.0, 1.0] and logged["rewards/judge_reward/late"] == 0.0
        assert len(server.requests) == 1 and "Capital of France?" in server.requests[0]["body"]["messages"][0]["content"]
    finally:
        server.stop()
    slow = FakeOpenAI(reply=_verdict, delay=5).start()  # answers long after the step's deadline (and stops within its 10 s)
    try:
        judged, reward = _policy_judge(slow, deadline=0.5)
        result, logged = {}, {}
        with judged:
            # TRL calls rewards from its training thread.
            worker = threading.Thread(target=lambda: result.update(scores=reward(**call, log_metric=logged.__setitem__)))
            worker.start()
            worker.join(20)
            assert not worker.is_alive()
        assert result["scores"] == [1.0, 0.0] and logged["rewards/judge_reward/late"] == 0.5 and judged.llm.late == 1
    finally:
        slow.stop()


def test_rl_judge_options_are_one_line(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "2+2?", "answer": "4"}])
    out = tmp_path / "rl"
    for args, message in ((["--reward", "judge", "--judge-model", "j", "--judge-backend", "transformers"], "--judge-backend must be openai"),
                          (["--reward", "judge", "--reward", "accuracy", "--judge-model", "j", "--judge-base-url", "http://x/v1"], "drop --reward accuracy"),
                          (["--reward", "judge", "--judge-model", "j", "--judge-base-url", "http://x/v1", "--judge-deadline", "0"], "--judge-deadline")):
        assert_usage_error(CliRunner().invoke(app, ["rl", str(data), "-o", str(out), *args]), message, out)


def test_a_killed_run_keeps_every_verdict_made_and_the_rerun_asks_only_the_rest(tmp_path, judge_server):
    # p4's judge keeps failing and is retried for minutes: the run is killed while it waits, p2 and p3 judged.
    _traces(tmp_path, [_row(4, "Paris", "Paris it is.", problem="[[fail]] Which city?")])
    out = tmp_path / "out"
    args = ["filter", str(tmp_path / "traces.jsonl"), "-o", str(out), "--check", "judge", "--judge-model", "j", "--judge-base-url", judge_server.url]
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args, "--judge-retry-delay", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waited = 0.0
        while len(judge_server.requests) < 3 and waited < 120:  # a hang guard, not a timing
            time.sleep(0.1)
            waited += 0.1
        assert len(judge_server.requests) >= 3
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert sorted(json.loads(line)["verdict"] for line in (out / CACHE_FILE).read_text().splitlines()) == ["judge_correct", "judge_incorrect"]
    asked = len(judge_server.requests)
    result = CliRunner().invoke(app, [*args, "--judge-max-retries", "0"])
    assert result.exit_code == 1 and "1 judge requests failed" in result.stderr
    assert len(judge_server.requests) - asked == 1  # p4 alone


def test_a_local_transformers_judge_and_an_answer_kind_with_no_rule(tmp_path, tiny_model):
    # A tiny random model never writes the verdict line: its rows are judge_unparseable, never a guess.
    rows = [_row(0, "4", "So \\boxed{4}."), _row(1, "Paris", "Paris."), _row(2, "a sonnet", "Roses are red.")]
    for row, kind in zip(rows, ("math", "math", "free-form")):
        row["kind"] = kind
    traces = write_jsonl(tmp_path / "kinds.jsonl", rows)
    cfg = FilterConfig(input=str(traces), output=str(tmp_path / "out"), checks=["judge"], dedup="none", accuracy_column="kind",
                       judge_model=str(tiny_model), judge_backend="transformers", judge_max_tokens=4)
    filter_traces(cfg)
    assert _scored(tmp_path / "out") == {"p0:0": "correct", "p1:0": "judge_unparseable", "p2:0": "judge_unparseable"}
    with pytest.raises(UsageError, match="free-form"):  # without the judge, a kind with no rule is refused
        filter_traces(FilterConfig(input=str(traces), output=str(tmp_path / "rules"), checks=["accuracy"], dedup="none", accuracy_column="kind"))
