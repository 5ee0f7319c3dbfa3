"""The openai backend against a local OpenAI-compatible server with injected faults."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from conftest import run_cli, write_jsonl
from r1distill.generate import GenerateConfig, generate


def _run(tmp_path: Path, server, problems: list[str], **settings) -> tuple[pl.DataFrame, object]:
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": p, "answer": "42"} for i, p in enumerate(problems)])
    cfg = GenerateConfig(
        input=str(source),
        output=str(tmp_path / "out"),
        model="teacher",
        backend="openai",
        base_urls=[server.url],
        retry_delay=0.01,
        **settings,
    )
    summary = generate(cfg)
    return pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id"), summary


def test_inline_think_is_split_and_rows_carry_the_schema(tmp_path, fake_server):
    traces, summary = _run(tmp_path, fake_server, ["What is 6*7?"], num_samples=3)
    assert traces["id"].to_list() == ["p0:0", "p0:1", "p0:2"]
    assert traces["sample"].to_list() == [0, 1, 2]
    row = traces.row(0, named=True)
    assert row["reasoning"] == "Thinking about: What is 6*7?\nPlease reason step by step,"
    assert row["response"] == "The answer is \\boxed{42}."
    assert row["completion"].startswith("<think>\n")
    assert row["finish_reason"] == "stop" and row["completion_tokens"] == 17 and row["prompt_tokens"] == 11
    assert row["prompt"][-1]["role"] == "user" and "\\boxed{}" in row["prompt"][-1]["content"]
    assert (row["model"], row["backend"], row["answer"], row["error"]) == ("teacher", "openai", "42", None)
    assert summary.present == 3 and summary.failed == 0
    seeds = {r["body"]["seed"] for r in fake_server.requests}
    assert len(seeds) == 3, "each sample gets its own seed"


def test_retries_500_429_drops_and_malformed_json(tmp_path, fake_server):
    problems = ["A [[500x2]]", "B [[429x1]]", "C [[dropx2]]", "D [[badjsonx1]]"]
    started = time.monotonic()
    traces, summary = _run(tmp_path, fake_server, problems)
    assert traces["finish_reason"].to_list() == ["stop"] * 4
    assert traces["error"].null_count() == 4
    assert summary.failed == 0
    attempts = {text.split("\n")[0]: count for text, count in fake_server.attempts.items()}
    assert attempts == {"A [[500x2]]": 3, "B [[429x1]]": 2, "C [[dropx2]]": 3, "D [[badjsonx1]]": 2}
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 was honoured"


def test_slow_reply_times_out_and_is_retried(tmp_path, fake_server):
    fake_server.slow_seconds = 3.0
    traces, _ = _run(tmp_path, fake_server, ["slow one [[slowx1]]"], request_timeout=0.5)
    assert traces["finish_reason"].to_list() == ["stop"]
    assert sum(fake_server.attempts.values()) == 2


def test_reasoning_content_field_and_length(tmp_path, fake_server):
    traces, summary = _run(tmp_path, fake_server, ["R [[reasoning]]", "L [[length]]"])
    reasoning_row, length_row = traces.row(0, named=True), traces.row(1, named=True)
    assert reasoning_row["reasoning"].startswith("Thinking about: R [[reasoning]]")
    assert reasoning_row["response"] == "The answer is \\boxed{42}."
    assert reasoning_row["completion"] == f"<think>\n{reasoning_row['reasoning']}\n</think>\n\nThe answer is \\boxed{{42}}."
    assert length_row["finish_reason"] == "length"
    assert summary.truncated == 1


def test_r1_zero_uses_the_completions_endpoint_with_the_paper_prompt(tmp_path, fake_server):
    traces, _ = _run(tmp_path, fake_server, ["What is 6*7?"], template="r1-zero")
    request = fake_server.requests[0]
    assert request["path"] == "/v1/completions"
    assert request["body"]["prompt"].startswith("A conversation between User and Assistant.")
    assert request["body"]["prompt"].endswith("User: What is 6*7?. Assistant:")
    row = traces.row(0, named=True)
    assert row["prompt"] == [{"role": "user", "content": request["body"]["prompt"]}]
    assert row["reasoning"] == "Thinking about: " + request["body"]["prompt"][:40]
    assert row["response"] == "<answer> 42 </answer>"


def test_requests_that_keep_failing_are_recorded_then_retried_next_run(tmp_path, fake_server):
    traces, summary = _run(tmp_path, fake_server, ["ok", "broken [[fail]]"], max_retries=2)
    failed = traces.filter(pl.col("finish_reason") == "error")
    assert failed["id"].to_list() == ["p1:0"]
    assert failed["error"][0] == "http_500: internal error (3 attempts)"
    assert summary.failed == 1
    before = len(fake_server.requests)
    _, again = _run(tmp_path, fake_server, ["ok", "broken [[fail]]"], max_retries=0)
    assert len(fake_server.requests) - before == 1, "only the failed row is retried"
    assert again.present == 2 and again.failed == 1


def test_several_base_urls_share_the_load(tmp_path, fake_server):
    from fake_openai import FakeOpenAI

    second = FakeOpenAI().start()
    try:
        fake_server.delay = second.delay = 0.02
        source = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"Q{i}"} for i in range(40)])
        cfg = GenerateConfig(str(source), str(tmp_path / "out"), model="t", backend="openai", base_urls=[fake_server.url, second.url], concurrency=8)
        assert generate(cfg).present == 40
        assert len(fake_server.requests) + len(second.requests) == 40
        assert min(len(fake_server.requests), len(second.requests)) >= 10
    finally:
        second.stop()


def test_api_key_never_reaches_output_logs_or_files(tmp_path, fake_server):
    secret = "sk-test-SUPERSECRET-123456"
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "ok"}, {"problem": "echo [[401echo]]"}])
    out = tmp_path / "out"
    result = run_cli(
        "-v", "generate", str(source), "-o", str(out), "-m", "t", "--backend", "openai", "--base-url", fake_server.url,
        "--api-key-env", "MY_TEAM_KEY",
        env={"MY_TEAM_KEY": secret},
    )
    assert result.returncode == 1, result.stderr
    assert {r["authorization"] for r in fake_server.requests} == {f"Bearer {secret}"}
    assert secret not in result.stdout and secret not in result.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and (out / "manifest.json").exists()
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    errors = pl.read_parquet(out / "*.parquet").filter(pl.col("finish_reason") == "error")["error"].to_list()
    assert errors == ["http_401: Incorrect API key provided: Bearer ***"]
