"""Crash safety and resume: kill -9, reruns, larger budgets, conflicts, shards and the journal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import trace_row, write_jsonl
from r1distill.errors import UsageError
from r1distill.generate import GenerateConfig, generate
from r1distill.generate.store import JOURNAL_DIR, TraceStore, read_state
from r1distill.schema import TRACE_SCHEMA
import pyarrow as pa


def _persisted_rows(out: Path) -> int:
    """Rows a rerun would find: in shards, plus whole lines in journals (read while the run rotates them)."""

    def lines(path: Path) -> int:
        try:
            return path.read_bytes().count(b"\n")
        except FileNotFoundError:  # turned into a shard since the glob; counted next poll
            return 0

    shards = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in out.glob("traces-*.parquet"))
    return shards + sum(lines(p) for p in out.glob(f"{JOURNAL_DIR}/*/*.jsonl"))


def _start(source: Path, out: Path, url: str, concurrency: int) -> subprocess.Popen:
    args = ["generate", str(source), "-o", str(out), "-m", "t", "--backend", "openai", "--base-url", url,
            "-n", "2", "--concurrency", str(concurrency), "--rows-per-shard", "25"]
    return subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_run_then_rerun_leaves_no_gap_and_no_duplicate(tmp_path, fake_server):
    fake_server.delay = 0.03
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "problem": f"Problem {i}"} for i in range(150)])
    out = tmp_path / "out"
    concurrency = 4
    for kill_after in (40, 140):
        process = _start(source, out, fake_server.url, concurrency)
        deadline = time.monotonic() + 120
        while _persisted_rows(out) < kill_after if out.exists() else True:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _persisted_rows(out) < 300, "the run was killed before it finished"
    final = _start(source, out, fake_server.url, concurrency)
    assert final.wait(timeout=120) == 0, final.stderr.read().decode()
    traces = pl.read_parquet(out / "*.parquet")
    assert traces.height == 300
    assert sorted(traces["id"].to_list()) == sorted(f"q{i}:{s}" for i in range(150) for s in range(2))
    assert traces["finish_reason"].unique().to_list() == ["stop"]
    # Only requests in flight at each kill were lost and generated again.
    assert 300 <= fake_server.served <= 300 + 2 * concurrency
    assert not list(out.glob(f"{JOURNAL_DIR}/*/*.jsonl"))
    # The killed runs wrote rows too, so the manifest names them, unfinished.
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [run["finished_at"] is None for run in runs] == [True, True, False]


def _cfg(tmp_path: Path, server, problems: list[str], **settings) -> GenerateConfig:
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "problem": p} for i, p in enumerate(problems)])
    return GenerateConfig(str(source), str(tmp_path / "out"), model="t", backend="openai", base_urls=[server.url], retry_delay=0.01, **settings)


def test_larger_max_tokens_redoes_only_truncated_rows(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, ["a", "b [[length]]", "c"], num_samples=2, max_tokens=100)
    first = generate(cfg)
    assert (first.present, first.truncated) == (6, 2)
    assert generate(cfg).generated == 0
    before = len(fake_server.requests)
    cfg.max_tokens = 200
    again = generate(cfg)
    redone = fake_server.requests[before:]
    assert again.generated == 2 and len(redone) == 2
    assert all("b [[length]]" in r["body"]["messages"][-1]["content"] and r["body"]["max_tokens"] == 200 for r in redone)
    traces = pl.read_parquet(Path(cfg.output) / "*.parquet")
    assert traces.height == 6 and traces["id"].n_unique() == 6
    assert traces.filter(pl.col("prompt_id") == "p1")["max_tokens"].to_list() == [200, 200]
    assert generate(cfg).generated == 0


def test_more_samples_generate_only_the_new_ones(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, ["a", "b"], num_samples=2)
    generate(cfg)
    cfg.num_samples = 3
    assert generate(cfg).generated == 2
    assert pl.read_parquet(Path(cfg.output) / "*.parquet").height == 6


def test_other_settings_into_the_same_out_are_refused(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, ["a", "b"])
    generate(cfg)
    cfg.temperature = 1.0
    with pytest.raises(UsageError, match="other settings.*new -o"):
        generate(cfg)


def test_shards_split_prompts_disjointly_and_run_side_by_side(tmp_path, fake_server):
    fake_server.delay = 0.01
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"Problem {i}"} for i in range(60)])
    out = tmp_path / "out"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "r1distill.cli", "generate", str(source), "-o", str(out), "-m", "t", "--backend", "openai",
             "--base-url", fake_server.url, "--shard", f"{i}/3", "--rows-per-shard", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read().decode()
    traces = pl.read_parquet(out / "*.parquet")
    assert traces.height == 60 and traces["prompt_id"].n_unique() == 60
    assert fake_server.served == 60
    manifests = sorted(p.name for p in out.glob("manifest-*.json"))
    assert manifests == [f"manifest-{i:05d}-of-00003.json" for i in range(3)]
    parts = [pl.read_parquet(list(out.glob(f"traces-{i:05d}-of-00003-*.parquet"))).height for i in range(3)]
    assert sum(parts) == 60 and min(parts) > 5


def _builder(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TRACE_SCHEMA)


def test_journal_recovery_keeps_whole_lines_and_is_idempotent(tmp_path):
    import orjson

    out = tmp_path / "out"
    journal_dir = out / JOURNAL_DIR / "00000-of-00001"
    journal_dir.mkdir(parents=True)
    journal = journal_dir / "run-00000.jsonl"
    lines = b"".join(orjson.dumps(trace_row(f"p{i}:0", 1000 + i)) + b"\n" for i in range(3))
    journal.write_bytes(lines + b'{"id": "p9:0", "prom')  # killed mid-write
    # A kill between the shard's rename and the journal's delete leaves both; recovery must not duplicate.
    with TraceStore(out, "00000-of-00001", _builder):
        pass
    journal.write_bytes(lines)
    with TraceStore(out, "00000-of-00001", _builder):
        pass
    state = read_state(out)
    assert sorted(state["id"].to_list()) == ["p0:0", "p1:0", "p2:0"]
    assert pl.read_parquet(out / "*.parquet").height == 3
    assert not list(journal_dir.glob("*.jsonl"))


def test_compact_keeps_the_newest_row_per_id(tmp_path):
    out = tmp_path / "out"
    with TraceStore(out, "00000-of-00001", _builder, rows_per_shard=2) as store:
        for i in range(4):
            store.append(trace_row(f"p{i}:0", 1000 + i))
        store.append(trace_row("p1:0", 5000))
        store.flush()
        assert store.compact() == 1
    traces = pl.read_parquet(out / "*.parquet")
    assert traces.height == 4
    assert traces.filter(pl.col("id") == "p1:0")["created_at"].dt.epoch("us").to_list() == [5000]


def test_a_second_writer_of_the_same_shard_is_refused(tmp_path):
    out = tmp_path / "out"
    with TraceStore(out, "00000-of-00001", _builder):
        with pytest.raises(UsageError, match="another `r1distill generate`"):
            with TraceStore(out, "00000-of-00001", _builder):
                pass


def test_rows_left_superseded_by_a_crash_are_compacted_by_the_next_run(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, ["a", "b"])
    generate(cfg)
    out = Path(cfg.output)
    # A run that redid p0:0 and died before compacting leaves two rows for it.
    stale = pl.read_parquet(out / "*.parquet").filter(pl.col("id") == "p0:0")
    stale.with_columns(pl.col("created_at") + pl.duration(seconds=1)).write_parquet(out / "traces-00000-of-00001-crashed.parquet")
    assert pl.read_parquet(out / "*.parquet").height == 3
    assert generate(cfg).generated == 0
    assert pl.read_parquet(out / "*.parquet").height == 2


def test_input_columns_named_like_trace_columns_are_carried_under_another_name(tmp_path, fake_server):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "q", "prompt": "raw prompt", "model": "someone"}])
    cfg = GenerateConfig(str(source), str(tmp_path / "out"), model="t", backend="openai", base_urls=[fake_server.url])
    generate(cfg)
    row = pl.read_parquet(tmp_path / "out" / "*.parquet").row(0, named=True)
    assert (row["model"], row["input_model"], row["input_prompt"]) == ("t", "someone", "raw prompt")


def test_credentials_of_a_base_url_that_does_not_answer_stay_out_of_the_error(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, ["a"])
    cfg.base_urls = ["http://user:secret-pass@127.0.0.1:1/v1?key=secret-key"]
    with pytest.raises(UsageError, match="no --base-url answers") as refused:
        generate(cfg)
    assert "http://***@127.0.0.1:1/v1?key=***" in str(refused.value) and "secret" not in str(refused.value)
    assert not Path(cfg.output).exists()


def test_data_parallel_ranks_split_exactly_their_shard(tmp_path):
    from r1distill.data import load_prompts
    from r1distill.generate.run import _my_prompts, rank_shards

    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"Problem {i}"} for i in range(200)])
    for shard in ("0/1", "1/3"):
        whole = set(_my_prompts(GenerateConfig(str(source), "unused", shard=shard))["prompt_id"])
        ranks = [set(_my_prompts(GenerateConfig(str(source), "unused", shard=s))["prompt_id"]) for s in rank_shards(shard, 4)]
        assert set().union(*ranks) == whole and sum(map(len, ranks)) == len(whole)
        assert all(ranks), "every rank gets work"
    assert len(load_prompts(source)) == 200
