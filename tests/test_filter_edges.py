"""filter at its edges: every bad option at once, null problems, the newcomer's first run, empty results,
permissions, full disks and Ctrl-C.

Run alone: python -m pytest -q tests/test_filter_edges.py
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import datasets
import polars as pl
import psutil
import pytest

from conftest import run_cli, write_jsonl
from r1distill.errors import UsageError
from r1distill.filter.run import FilterConfig, filter_traces


def _smollm2_like_traces(tmp_path, count: int = 16):
    """What the embedded SmolLM2 writes: a chat model that answers without ever writing <think>."""
    rows = [
        {"id": f"p{i}:0", "prompt_id": f"p{i}", "sample": 0, "problem": f"What is {i} + {i}?", "answer": str(2 * i),
         "completion": f"To add {i} and {i}, we combine them. The answer is \\boxed{{{2 * i}}}.", "finish_reason": "stop",
         "completion_tokens": 20}
        for i in range(count)
    ]
    folder = tmp_path / "demo"
    folder.mkdir()
    pl.DataFrame(rows).write_parquet(folder / "traces-0.parquet")
    return folder


def test_every_bad_option_is_reported_at_once_before_anything_runs(tmp_path):
    traces = _smollm2_like_traces(tmp_path)
    result = run_cli("filter", str(traces), "-o", str(tmp_path / "out"), "--language", "fr", "--workers", "-1",
                     "--min-tokens", "10", "--max-tokens", "5", "--max-repetition", "1.5", "--min-pass-rate", "0.9", "--max-pass-rate", "0.1")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    for fragment in ("--language 'fr' is not supported", "--workers must be at least 1", "--min-tokens (10) is larger than --max-tokens (5)",
                     "--max-repetition must be in [0, 1]", "--min-pass-rate and --max-pass-rate"):
        assert fragment in line
    assert not (tmp_path / "out").exists()


def test_null_or_blank_problems_are_refused_or_dropped_with_skip_invalid(tmp_path):
    rows = [
        {"id": "a", "prompt_id": "pa", "problem": "What is 2+2?", "answer": "4", "completion": "<think>\nTwo and two make four.\n</think>\n\n\\boxed{4}"},
        {"id": "b", "prompt_id": "pb", "problem": None, "answer": "4", "completion": "<think>\nTwo and two make four.\n</think>\n\n\\boxed{4}"},
        {"id": "c", "prompt_id": "pc", "problem": "   ", "answer": "4", "completion": "<think>\nTwo and two make four.\n</think>\n\n\\boxed{4}"},
    ]
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(UsageError, match=r"column 'problem' is null or blank at row 1 \(2 such rows\).*--skip-invalid"):
        filter_traces(FilterConfig(str(source), str(tmp_path / "refused"), workers=1))
    assert not (tmp_path / "refused").exists()
    summary = filter_traces(FilterConfig(str(source), str(tmp_path / "out"), workers=1, skip_invalid=True))
    assert summary.kept == 1 and summary.dropped == {"invalid_problem": 2}
    sft = pl.read_parquet(tmp_path / "out" / "data" / "*.parquet")
    assert sft["id"].to_list() == ["a"] and all(m["content"] for m in sft["messages"][0])


def test_the_newcomers_first_filter_says_why_nothing_was_kept_and_still_writes_a_dataset(tmp_path):
    traces = _smollm2_like_traces(tmp_path)
    out = tmp_path / "sft"
    result = run_cli("filter", str(traces), "-o", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stderr.split())
    assert "16 of 16 rows fail the format check (missing_think)" in flat and "drop the format check" in flat
    assert "no trace was kept" in flat
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"]["reasoning"] == 0 and stats["hints"][0].startswith("16 of 16 rows fail the format check")
    # The empty split still has its columns: polars and datasets' streaming reader see a table with no rows.
    assert pl.read_parquet(out / "data" / "*.parquet").height == 0
    streamed = datasets.load_dataset(str(out), split="train", streaming=True)
    assert list(streamed) == [] and "messages" in streamed.features
    # Following the hint keeps them all.
    again = run_cli("filter", str(traces), "-o", str(tmp_path / "sft2"), "--workers", "1", "--check", "accuracy", "--check", "language")
    assert again.returncode == 0 and "fail the" not in again.stderr
    assert datasets.load_dataset(str(tmp_path / "sft2"), split="train").num_rows == 16


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    traces = _smollm2_like_traces(tmp_path, 2)
    out = tmp_path / f"out-{umask:o}"
    code = f"import os; os.umask({umask}); from r1distill.cli import app; app()"
    args = ["filter", str(traces), "-o", str(out), "--workers", "1", "--check", "accuracy"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (out, out / "data", out / "stats.json"):
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_a_read_only_output_is_refused_up_front(tmp_path, read_only_dir):
    traces = _smollm2_like_traces(tmp_path, 2)
    result = run_cli("filter", str(traces), "-o", str(read_only_dir / "out"), "--workers", "1")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "is not writable" in line and str(read_only_dir) in line


def test_a_full_disk_is_one_line_and_leaves_no_half_written_dataset(tmp_path, small_disk):
    folder, _ = small_disk
    rows = [{"id": f"p{i}:0", "prompt_id": f"p{i}", "problem": f"Problem {i}", "answer": "4",
             "completion": f"<think>\n{os.urandom(600).hex()}\n</think>\n\n\\boxed{{4}}"} for i in range(400)]  # incompressible
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    result = run_cli("filter", str(source), "-o", str(folder / "out"), "--workers", "1", "--check", "format")
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "No space left on device" in error and "Traceback" not in result.stderr
    assert list(folder.iterdir()) == []


def test_ctrl_c_in_filter_is_one_line_and_leaves_nothing(tmp_path):
    # Answers only SymPy can decide keep the Math-Verify workers busy while the signal arrives.
    times = " \\cdot "
    rows = [{"id": f"p{i}:0", "prompt_id": f"p{i}", "problem": f"Problem {i}", "answer": f"x^{i % 29 + 2}",
             "completion": f"<think>\nmultiply\n</think>\n\n\\boxed{{{times.join(['x'] * (i % 29 + 2))}}}"} for i in range(40000)]
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "filter", str(source), "-o", str(out), "--workers", "2", "--batch-rows", "200"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    # Inside the scoring pass: once its two verifier workers are up, however slow the machine's start-up.
    deadline = time.monotonic() + 120
    while len(psutil.Process(process.pid).children(recursive=True)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no workers in 120 s"
        time.sleep(0.2)
    time.sleep(1)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: nothing was written; rerun the same command"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


def test_no_hint_when_only_a_minority_fails_a_check(tmp_path):
    folder = _smollm2_like_traces(tmp_path, 10)
    table = pl.read_parquet(folder / "traces-0.parquet")
    thinking = pl.Series([f"<think>\nadd them\n</think>\n\n{c}" if i >= 3 else c for i, c in enumerate(table["completion"])])
    table.with_columns(thinking.alias("completion")).write_parquet(folder / "traces-0.parquet")
    filter_traces(FilterConfig(str(folder), str(tmp_path / "out"), workers=1))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"] == {"format": 3} and stats["hints"] == []


def test_a_check_most_rows_fail_is_named_even_when_another_check_fails_them_first(tmp_path):
    # What the embedded SmolLM2 gives: no <think> anywhere, and wrong answers too (accuracy is checked first).
    folder = _smollm2_like_traces(tmp_path, 8)
    table = pl.read_parquet(folder / "traces-0.parquet")
    table.with_columns(pl.lit("The answer is \\boxed{-1}.").alias("completion")).write_parquet(folder / "traces-0.parquet")
    filter_traces(FilterConfig(str(folder), str(tmp_path / "out"), workers=1))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"] == {"accuracy": 8}
    assert [hint.split(":")[0] for hint in stats["hints"]] == [
        "8 of 8 rows fail the accuracy check (incorrect)", "8 of 8 rows fail the format check (missing_think)"
    ]
