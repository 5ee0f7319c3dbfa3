"""Servers that are down, modest, misconfigured or refusing: the openai backend routes around, slows down or says why.

    PYTHONPATH=.. python -m pytest -q tests/test_servers.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from pathlib import Path

import polars as pl

from conftest import run_cli, write_jsonl
from fake_openai import BacklogServer, FakeOpenAI, dead_url
from r1distill.generate import GenerateConfig, generate
from r1distill.backends import Request, Sampling
from r1distill.backends.openai_compat import OpenAIBackend
from r1distill.backends.replicas import Failure, Replica, Rotation


def _config(tmp_path: Path, base_urls: list[str], problems: list[str], **settings) -> GenerateConfig:
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": p} for i, p in enumerate(problems)])
    return GenerateConfig(str(source), str(tmp_path / "out"), model="teacher", backend="openai", base_urls=base_urls, retry_delay=0.01, **settings)


def _traces(tmp_path: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")


def test_a_dead_replica_costs_no_row_and_is_reported_once(tmp_path, fake_server, caplog):
    dead = dead_url()
    # One retry per request: before, every request that met the dead replica twice failed.
    cfg = _config(tmp_path, [dead, fake_server.url], [f"Q{i}" for i in range(300)], concurrency=32, max_retries=1)
    with caplog.at_level(logging.INFO):
        summary = generate(cfg)
    assert (summary.present, summary.failed) == (300, 0)
    assert len(fake_server.requests) == 300, "each row sent once to the live replica"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dead in warnings[0] and "connection_refused" in warnings[0] and "is the server up" in warnings[0]


def test_a_replica_that_dies_mid_run_costs_no_row(tmp_path, fake_server):
    second = FakeOpenAI(delay=0.005).start()
    fake_server.delay = 0.005

    def kill_second_after_50():
        while len(second.requests) < 50:
            time.sleep(0.005)
        second.stop()

    killer = threading.Thread(target=kill_second_after_50, daemon=True)
    killer.start()
    try:
        summary = generate(_config(tmp_path, [fake_server.url, second.url], [f"Q{i}" for i in range(400)], concurrency=16, max_retries=2))
    finally:
        killer.join(10)
        second.stop()
    assert (summary.present, summary.failed) == (400, 0)
    assert 50 <= len(second.requests) < 400 and len(fake_server.requests) > 200


def test_when_every_replica_is_gone_the_rest_fail_at_once_with_the_reason(tmp_path, fake_server):
    def kill_after_20():
        while len(fake_server.requests) < 20:
            time.sleep(0.005)
        fake_server.stop()

    fake_server.delay = 0.005
    killer = threading.Thread(target=kill_after_20, daemon=True)
    killer.start()
    summary = generate(_config(tmp_path, [fake_server.url], [f"Q{i}" for i in range(200)], concurrency=4, max_retries=2))
    killer.join(10)
    assert summary.present == 200 and 0 < summary.failed < 200
    assert summary.failure_reasons.get("connection_refused", 0) >= summary.failed - 4, "only requests in flight at the kill differ"
    refused = _traces(tmp_path).filter(pl.col("error").str.starts_with("connection_refused"))["error"][0]
    assert "Cannot connect to host" in refused


def test_a_replica_out_of_the_rotation_is_probed_once_its_backoff_has_passed():
    # The wait for the backoff ends in asyncio.wait_for's timeout, which is not the builtin TimeoutError
    # before Python 3.11: there it escaped and failed every request still waiting for a replica.
    replica = Replica(dead_url(), None)
    rotation = Rotation([replica], retry_delay=0.05, max_retry_delay=1.0, max_probes=3)
    rotation.take_out(replica, Failure("connection_refused", "Cannot connect to host", unreachable=True))

    async def pick():
        return await asyncio.wait_for(rotation.pick(), timeout=10)

    assert asyncio.run(pick()) == (replica, True)


def test_a_server_with_backlog_5_completes_every_row_at_concurrency_256(tmp_path):
    server = BacklogServer().start()
    try:
        summary = generate(_config(tmp_path, [server.url], [f"Q{i}" for i in range(400)], concurrency=256))
    finally:
        server.stop()
    assert (summary.present, summary.failed) == (400, 0)
    assert server.served == 402, "every row once, the preflight and its /tokenize probe of the template"


def test_only_a_server_that_closes_connections_gets_paced_requests(tmp_path, fake_server):
    closing = BacklogServer().start()
    try:
        backend = OpenAIBackend("m", Sampling(8, 0.6, 0.95), [fake_server.url, closing.url], concurrency=4)
        done = []
        asyncio.run(backend.run([Request(f"p{i}:0", [{"role": "user", "content": f"Q{i}"}]) for i in range(20)], done.append))
    finally:
        closing.stop()
    assert len(done) == 20 and all(r.finish_reason == "stop" for r in done)
    keep_alive, http10 = backend.replicas
    assert not keep_alive.closes_connections and http10.closes_connections


def test_preflight_names_a_model_the_server_refuses_in_one_line_and_writes_nothing(tmp_path, fake_server):
    fake_server.model = "deepseek-r1"
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is 6*7?"}])
    out = tmp_path / "out"
    result = run_cli("generate", str(source), "-o", str(out), "-m", "deepseek-r2", "--backend", "openai", "--base-url", fake_server.url)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "http_404" in line and "deepseek-r2" in line and "it serves: deepseek-r1" in line and "check --model" in line
    assert not out.exists() and fake_server.requests == []


def test_preflight_without_any_server_up_is_one_line_and_writes_nothing(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "What is 6*7?"}])
    out = tmp_path / "out"
    dead = [dead_url(), dead_url()]
    result = run_cli("generate", str(source), "-o", str(out), "-m", "m", "--backend", "openai", "--base-url", dead[0], "--base-url", dead[1])
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: no --base-url answers")
    assert line.count("connection_refused") == 2 and "is the server up" in line
    assert not out.exists()


def test_a_permanent_400_is_stored_with_its_status_and_retried_only_with_retry_failed(tmp_path, fake_server):
    problems = ["fine", "refused [[400]]", "huge [[toolong]]"]
    summary = generate(_config(tmp_path, [fake_server.url], problems, max_retries=3))
    errors = dict(_traces(tmp_path).select("id", "error").iter_rows())
    assert errors["p0:0"] is None
    assert errors["p1:0"] == 'http_400: {"object": "error", "message": "temperature must be at most 2", "code": 400}'
    assert errors["p2:0"].startswith("prompt_too_long: ") and "maximum context length" in errors["p2:0"]
    assert len(fake_server.requests) == 3, "a 4xx is not retried within the run"
    assert (summary.failed, summary.permanent, summary.failure_reasons) == (2, 2, {"http_400": 1, "prompt_too_long": 1})

    again = generate(_config(tmp_path, [fake_server.url], problems, max_retries=3))
    assert len(fake_server.requests) == 3, "nor by a rerun"
    assert (again.present, again.failed, again.permanent) == (3, 2, 2)

    generate(_config(tmp_path, [fake_server.url], problems, max_retries=3, retry_failed=True))
    assert len(fake_server.requests) == 5, "--retry-failed sends both again"


def test_the_summary_names_a_401_and_what_to_check(tmp_path, fake_server):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "fine"}, {"problem": "key [[401echo]]"}])
    result = run_cli("generate", str(source), "-o", str(tmp_path / "out"), "-m", "t", "--backend", "openai", "--base-url", fake_server.url)
    assert result.returncode == 1, result.stderr
    assert "1 requests failed for good" in result.stderr and "1 http_401 (check the API key in the variable that --api-key-env names)" in result.stderr
    assert "rerun with --retry-failed" in result.stderr


def test_credentials_in_base_urls_are_sent_but_never_written_or_logged(tmp_path, fake_server):
    password, query_key = "hunter2-pass", "sk-query-SECRET-42"
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    host = fake_server.url.removeprefix("http://")
    with_password, with_query = f"http://bob:{password}@{host}", f"{fake_server.url}?api_key={query_key}"
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"Q{i}"} for i in range(20)] + [{"problem": "echo [[401echo]]"}])
    out = tmp_path / "out"
    result = run_cli(
        "-v", "generate", str(source), "-o", str(out), "-m", "t", "--backend", "openai", "--concurrency", "2",
        "--base-url", with_password, f"--base-url={with_query}",
    )
    assert result.returncode == 1, result.stderr
    seen = {(r["authorization"], r["query"]) for r in fake_server.requests + fake_server.preflights}
    assert seen == {(f"Basic {basic}", ""), (None, f"api_key={query_key}")}, "each replica authenticates its own way"
    manifest = json.loads((out / "manifest.json").read_text())
    [run] = manifest["runs"]
    assert run["options"]["base_urls"] == [f"http://***@{host}", f"{fake_server.url}?api_key=***"]
    assert f"--base-url=http://127.0.0.1:{host.split(':')[1].split('/')[0]}/v1?api_key=***" in run["command"]
    for secret in (password, query_key, basic):
        assert secret not in result.stdout and secret not in result.stderr
        for path in (p for p in out.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), (secret, path)
