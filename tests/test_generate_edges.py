"""generate at its edges: over-long prompts, a bad model or device, Ctrl-C mid-batch, full and read-only disks.

Run alone: python -m pytest -q tests/test_generate_edges.py
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from conftest import run_cli, write_jsonl
from r1distill.generate import GenerateConfig, generate
from r1distill.generate.store import JOURNAL_DIR


def test_a_prompt_longer_than_the_context_is_an_error_row_at_once_and_the_run_goes_on(tmp_path, tiny_model):
    # The tiny model's context is 2048 tokens; "word " is one token in the SmolLM2 tokenizer.
    rows = [{"id": "short", "problem": "What is 1 + 1?"}, {"id": "long", "problem": "word " * 3000}, {"id": "edge", "problem": "word " * 1950}]
    source = write_jsonl(tmp_path / "p.jsonl", rows)
    summary = generate(GenerateConfig(str(source), str(tmp_path / "out"), model=str(tiny_model), max_tokens=64, batch_size=1))
    traces = {row["id"]: row for row in pl.read_parquet(tmp_path / "out" / "*.parquet").iter_rows(named=True)}
    assert traces["long:0"]["finish_reason"] == "error"
    assert traces["long:0"]["error"].startswith("prompt_too_long: the prompt has ") and traces["long:0"]["error"].endswith("context is 2048")
    assert traces["short:0"]["finish_reason"] == "length" and traces["short:0"]["completion_tokens"] == 64
    # A prompt that leaves less room than max_tokens is generated only up to the context, never past it.
    edge = traces["edge:0"]
    assert edge["finish_reason"] == "length" and edge["prompt_tokens"] + edge["completion_tokens"] == 2048
    assert summary.failed == 1


@pytest.mark.train
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--model", "not a/model name!"], "error: --model not a/model name!: cannot load it"),
        (["--model", "/no/such/folder"], "error: --model /no/such/folder: cannot load it"),
        (["--device", "bogus"], "error: --device 'bogus' is not a torch device; use cpu, cuda, cuda:N or mps"),
        (["--device", "cuda:0"], "error: --device cuda:0: no CUDA GPU is visible here; use --device cpu"),
    ],
)
def test_a_bad_model_or_device_is_one_line_before_out_is_touched(tmp_path, option, message):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}])
    result = run_cli("generate", str(source), "-o", str(tmp_path / "out"), *option)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
    assert result.stderr.startswith(message), result.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_mid_batch_stops_at_the_first_press_and_the_rerun_resumes(tmp_path, tiny_model):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "problem": f"What is {i} + {i}?"} for i in range(4)])
    out = tmp_path / "out"
    args = ["generate", str(source), "-o", str(out), "-m", str(tiny_model), "--max-tokens", "250", "--batch-size", "1"]
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # Wait for the first finished row: the second batch is then running inside model.generate.
    while not any(p.stat().st_size for p in out.glob(f"{JOURNAL_DIR}/*/*.jsonl")):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # once: a second press must not be needed
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: finished rows are saved; rerun the same command to resume"
    saved = pl.read_parquet(out / "*.parquet")
    assert 1 <= saved.height < 4
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    final = pl.read_parquet(out / "*.parquet")
    assert final.height == 4 and final["id"].n_unique() == 4
    assert set(saved["id"]) <= set(final["id"])


def test_a_read_only_output_folder_is_one_line_and_writes_nothing(tmp_path, fake_server, read_only_dir):
    source = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}])
    result = run_cli("generate", str(source), "-o", str(read_only_dir / "out"), "-m", "t", "--backend", "openai", "--base-url", fake_server.url)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(read_only_dir) in result.stderr, result.stderr
    assert list(read_only_dir.iterdir()) == []


def test_a_full_disk_is_one_line_and_the_rerun_after_freeing_space_completes(tmp_path, fake_server, small_disk):
    folder, resize = small_disk
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "problem": f"Problem {i} " + "padding " * 40} for i in range(300)])
    args = ["generate", str(source), "-o", str(folder / "out"), "-m", "t", "--backend", "openai", "--base-url", fake_server.url, "--rows-per-shard", "50"]
    full = run_cli(*args)
    assert full.returncode == 2, full.stderr
    assert full.stderr.strip().splitlines()[-1].endswith("No space left on device; free some space or choose another -o, then rerun the same command")
    assert "Traceback" not in full.stderr
    resize("size=16m")
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    traces = pl.read_parquet(folder / "out" / "*.parquet")
    assert traces.height == 300 and traces["id"].n_unique() == 300
