"""The journal cannot be wedged, the lock always goes, readers survive compaction, and OUT keeps one configuration.

    PYTHONPATH=.. python -m pytest -q tests/test_store.py
"""

from __future__ import annotations

import errno
import json
import os
from fnmatch import fnmatch
from pathlib import Path

import orjson
import polars as pl
import pytest

from conftest import run_cli, trace_row, write_jsonl
from r1distill.errors import UsageError
from r1distill.files import temp_glob
from r1distill.generate import GenerateConfig, generate
from r1distill.generate import store as store_module
from r1distill.generate.store import JOURNAL_DIR, TraceStore, read_state
from r1distill.schema import trace_table

TAG = "00000-of-00001"


def _cfg(tmp_path: Path, server, problems: dict[str, str], **settings) -> GenerateConfig:
    # A new prompt file per call, so a config made earlier keeps reading its own prompts.
    source = tmp_path / f"prompts-{len(list(tmp_path.glob('prompts-*')))}.jsonl"
    write_jsonl(source, [{"id": key, "problem": problem} for key, problem in problems.items()])
    defaults = {"model": "t", "backend": "openai", "base_urls": [server.url], "retry_delay": 0.01}
    return GenerateConfig(str(source), str(tmp_path / "out"), **(defaults | settings))


def _traces(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "traces-*.parquet")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_poisoned_journal_is_stored_and_its_unconvertible_lines_are_rejected(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, {"p0": "a", "p1": "b", "p2": "c"})
    generate(cfg)
    out = Path(cfg.output)
    first = {row["id"]: row for row in _traces(out).with_columns(pl.col("created_at").dt.epoch("us")).to_dicts()}
    # What an older version journaled from a bad server reply, then a row no coercion can fix, then line noise.
    later = max(row["created_at"] for row in first.values()) + 1
    seventeen = first["p0:0"] | {"completion_tokens": "seventeen", "prompt_tokens": "11", "created_at": later}
    unconvertible = first["p1:0"] | {"prompt": "not a list of messages", "created_at": later}
    journal = out / JOURNAL_DIR / TAG / "killed-run-00000.jsonl"
    journal.write_bytes(orjson.dumps(seventeen) + b"\n" + orjson.dumps(unconvertible) + b"\n" + b"}{ not json\n")

    rerun = generate(cfg)

    assert (rerun.generated, rerun.rejected) == (0, 2)
    traces = _traces(out)
    assert traces.height == 3, "the recovered p0:0 superseded the old one and was compacted"
    p0 = traces.filter(pl.col("id") == "p0:0").row(0, named=True)
    assert (p0["completion_tokens"], p0["prompt_tokens"]) == (None, 11)
    assert traces.filter(pl.col("id") == "p1:0")["prompt"].to_list() == [first["p1:0"]["prompt"]]
    rejected = [json.loads(line) for line in (out / JOURNAL_DIR / f"rejected-{TAG}.jsonl").read_text().splitlines()]
    assert [r["journal"] for r in rejected] == ["killed-run-00000", "killed-run-00000"]
    assert rejected[0]["reason"].startswith("not JSON") and rejected[0]["row"] == "}{ not json"
    assert rejected[1]["row"]["id"] == "p1:0" and rejected[1]["reason"].startswith("ArrowTypeError")
    assert not list((out / JOURNAL_DIR / TAG).glob("*.jsonl"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [run["counts"]["rejected"] for run in manifest["runs"]] == [0, 2]
    # Not wedged: the next run neither fails nor rejects anything again.
    assert generate(cfg).rejected == 0


def test_a_reply_with_token_counts_as_text_is_coerced_before_it_is_journaled(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, {"p0": "a [[textusage]]", "p1": "b"})
    summary = generate(cfg)
    assert (summary.present, summary.failed, summary.completion_tokens) == (2, 0, 17)
    rows = {row["id"]: row for row in _traces(Path(cfg.output)).to_dicts()}
    assert (rows["p0:0"]["completion_tokens"], rows["p0:0"]["prompt_tokens"]) == (None, 11)
    assert (rows["p1:0"]["completion_tokens"], rows["p1:0"]["prompt_tokens"]) == (17, 11)
    assert generate(cfg).generated == 0


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_the_lock_is_released_when_recovery_or_the_last_flush_raises(tmp_path, monkeypatch):
    out = tmp_path / "out"
    journal_dir = out / JOURNAL_DIR / TAG
    journal_dir.mkdir(parents=True)
    (journal_dir / "killed-00000.jsonl").write_bytes(orjson.dumps(trace_row("p0:0", 1000)) + b"\n")
    with monkeypatch.context() as patch:
        patch.setattr(store_module.pq, "write_table", _disk_full)
        with pytest.raises(OSError, match="No space"):
            with TraceStore(out, TAG, trace_table):
                pass
    with monkeypatch.context() as patch, pytest.raises(OSError, match="No space"):
        with TraceStore(out, TAG, trace_table) as store:
            store.append(trace_row("p1:0", 2000))
            patch.setattr(store_module.pq, "write_table", _disk_full)
    # Neither failure kept the lock, and both journals are still there to recover.
    with TraceStore(out, TAG, trace_table):
        pass
    assert sorted(read_state(out)["id"].to_list()) == ["p0:0", "p1:0"]


def test_read_state_lists_the_shards_again_when_a_compaction_removes_one_meanwhile(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with TraceStore(out, TAG, trace_table) as store:
        store.append(trace_row("p0:0", 1000))
        store.flush()
        store.append(trace_row("p0:0", 2000))
        store.append(trace_row("p1:0", 2000))
    assert len(list(out.glob("traces-*.parquet"))) == 2
    real_scan = store_module.scan_shards
    reads = []

    def compacted_meanwhile(shards):
        reads.append(len(shards))
        if len(reads) == 1:
            # Another worker compacts between this reader's listing and its read: the older shard goes.
            TraceStore(out, "00001-of-00002", trace_table).compact()
        return real_scan(shards)

    monkeypatch.setattr(store_module, "scan_shards", compacted_meanwhile)
    state = read_state(out)
    assert reads == [2, 1]
    assert sorted(state["id"].to_list()) == ["p0:0", "p1:0"]
    assert state.filter(pl.col("id") == "p0:0")["created_at"].dt.epoch("us").to_list() == [2000]


def test_compaction_syncs_the_rewritten_shard_and_the_folder_before_it_replaces_or_removes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with TraceStore(out, TAG, trace_table) as store:
        store.append(trace_row("p0:0", 1000))
        store.append(trace_row("p1:0", 1000))
        store.flush()
        store.append(trace_row("p2:0", 1000))
        store.flush()
        store.append(trace_row("p0:0", 2000))
        store.append(trace_row("p2:0", 2000))
        store.flush()
        first, second, _ = sorted(out.glob("traces-*.parquet"))
        events = []
        real_fsync, real_replace, real_unlink = os.fsync, os.replace, Path.unlink
        # What is synced, by the name its descriptor has (a file written under a temporary name, or OUT).
        monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name)) or real_fsync(fd))
        monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", Path(dst).name)) or real_replace(src, dst))
        monkeypatch.setattr(Path, "unlink", lambda path, **kw: events.append(("unlink", path.name)) or real_unlink(path, **kw))
        assert store.compact() == 2
    # The folder is synced first (the newer rows' shard is on disk), the rewritten file before it replaces the old one.
    assert events[0] == ("fsync", "out")
    replaced = events.index(("replace", first.name))
    assert events[replaced - 1][0] == "fsync" and fnmatch(events[replaced - 1][1], temp_glob(first.name))
    assert ("unlink", second.name) in events and events[-1] == ("fsync", "out")
    assert sorted(read_state(out)["id"].to_list()) == ["p0:0", "p1:0", "p2:0"]


@pytest.mark.parametrize(
    "setting",
    [{"temperature": 1.0}, {"top_p": 0.5}, {"seed": 7}, {"model": "other"}, {"system": "Be terse."},
     {"prompt_template": "Solve: {problem}"}, {"template": "r1-zero"}],
    ids=lambda s: next(iter(s)),
)
def test_an_out_made_with_other_settings_is_refused_even_for_new_prompts(tmp_path, fake_server, setting):
    generate(_cfg(tmp_path, fake_server, {"p0": "a", "p1": "b"}))
    out = tmp_path / "out"
    before = _snapshot(out)
    served = fake_server.served
    name = next(iter(setting))
    with pytest.raises(UsageError, match=rf"other settings \({name} .* there, .* now; see manifest.json\); write to a new -o folder"):
        generate(_cfg(tmp_path, fake_server, {"q0": "new problem"}, **setting))
    assert _snapshot(out) == before and fake_server.served == served


def test_the_same_settings_with_new_prompts_and_other_budgets_are_accepted_and_every_run_is_recorded(tmp_path, fake_server):
    first = _cfg(tmp_path, fake_server, {"p0": "a", "p1": "b"}, command=["generate", "first"])
    generate(first)
    # Budget, samples and how requests are sent do not shape a row's text: they may change.
    second = _cfg(tmp_path, fake_server, {"q0": "c"}, num_samples=2, max_tokens=64, concurrency=3, command=["generate", "second"])
    assert generate(second).generated == 2
    assert sorted(_traces(Path(first.output))["id"].to_list()) == ["p0:0", "p1:0", "q0:0", "q0:1"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"] == {"model": "t", "template": "chat", "system": None, "prompt_template": None,
                                    "temperature": 0.6, "top_p": 0.95, "seed": 0, "chat_template_kwargs": [], "thinking_budget": None}
    runs = manifest["runs"]
    assert [run["command"] for run in runs] == [["generate", "first"], ["generate", "second"]]
    assert [run["counts"]["generated"] for run in runs] == [2, 2]
    assert [run["options"]["max_tokens"] for run in runs] == [4096, 64]
    assert all(run["finished_at"] >= run["started_at"] and run["versions"]["r1distill"] for run in runs)


def test_shards_with_the_same_settings_share_an_out_and_one_with_others_is_refused(tmp_path, fake_server):
    problems = {f"p{i}": f"problem {i}" for i in range(8)}
    generate(_cfg(tmp_path, fake_server, problems, shard="0/2"))
    generate(_cfg(tmp_path, fake_server, problems, shard="1/2"))
    assert generate(_cfg(tmp_path, fake_server, problems)).generated == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("manifest*.json")) == ["manifest-00000-of-00002.json", "manifest-00001-of-00002.json", "manifest.json"]
    with pytest.raises(UsageError, match="seed 0 there, 3 now; see manifest-00000-of-00002.json"):
        generate(_cfg(tmp_path, fake_server, {"q0": "new"}, shard="1/2", seed=3))


def test_without_a_manifest_the_rows_request_keys_decide(tmp_path, fake_server):
    generate(_cfg(tmp_path, fake_server, {"p0": "a", "p1": "b"}))
    out = tmp_path / "out"
    (out / "manifest.json").unlink()  # as a first run killed by an older version leaves it
    with pytest.raises(UsageError, match="traces of 2 prompts made with other settings"):
        generate(_cfg(tmp_path, fake_server, {"q0": "c"}, system="Be terse."))
    assert not (out / "manifest.json").exists()
    assert generate(_cfg(tmp_path, fake_server, {"q0": "c"})).generated == 1


def test_a_manifest_from_before_runs_were_kept_becomes_the_first_run(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, {"p0": "a"})
    generate(cfg)
    out = tmp_path / "out"
    legacy = {"stage": "generate", "created_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T01:00:00+00:00",
              "command": ["generate", "old"], "settings": {"model": "t", "temperature": 0.6, "base_urls": []},
              "versions": {"r1distill": "0.0.1"}, "counts": {"generated": 1}}
    (out / "manifest.json").write_text(json.dumps(legacy))
    with pytest.raises(UsageError, match="temperature 0.6 there, 0.9 now"):
        generate(_cfg(tmp_path, fake_server, {"q0": "b"}, temperature=0.9))
    generate(_cfg(tmp_path, fake_server, {"q0": "b"}))
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [run["command"] for run in runs] == [["generate", "old"], []]
    assert runs[0]["options"]["temperature"] == 0.6 and runs[1]["counts"]["generated"] == 1


def test_the_cli_refuses_other_settings_in_one_line_with_exit_2(tmp_path, fake_server):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "p0", "problem": "a"}])
    other = write_jsonl(tmp_path / "q.jsonl", [{"id": "q0", "problem": "b"}])
    common = ["-o", str(tmp_path / "out"), "-m", "t", "--backend", "openai", "--base-url", fake_server.url]
    assert run_cli("generate", str(source), *common).returncode == 0
    refused = run_cli("generate", str(other), *common, "--temperature", "1.0")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "temperature 0.6 there, 1.0 now" in refused.stderr
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"]) == 1


def test_an_out_with_shards_from_before_the_forced_column_resumes_and_reads_as_one_table(tmp_path, fake_server):
    cfg = _cfg(tmp_path, fake_server, {"p0": "a", "p1": "b"})
    generate(cfg)
    out = Path(cfg.output)
    # What a version before `forced` wrote: the same shard without that column.
    (old,) = out.glob("traces-*.parquet")
    pl.read_parquet(old).drop("forced").write_parquet(old)

    rerun = generate(_cfg(tmp_path, fake_server, {"p0": "a", "p1": "b", "p2": "c"}))

    assert rerun.generated == 1
    state = read_state(out)
    assert sorted(state["id"].to_list()) == ["p0:0", "p1:0", "p2:0"]
    shards = sorted(out.glob("traces-*.parquet"))
    assert {"forced" in pl.read_parquet_schema(shard) for shard in shards} == {True, False}
    assert run_cli("report", str(out), "-o", str(tmp_path / "report.html")).returncode == 0
    filtered = run_cli("filter", str(out), "-o", str(tmp_path / "kept"), "--check", "format")
    assert filtered.returncode == 0, filtered.stderr
