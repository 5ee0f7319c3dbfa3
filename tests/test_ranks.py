"""sft and rl under `accelerate launch` with two processes on the CPU (gloo), as the README launches them on
GPUs: the data read and tokenized by one process and shared (its errors said by every rank), one saved
model, metrics from rank 0 only, run.json's process count, resume from a checkpoint, and the verifier's
workers split between the ranks.

    PYTHONPATH=.. python -m pytest -q tests/test_ranks.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl

pytestmark = pytest.mark.slow

# accelerate starts several processes only through its multi-GPU launcher (MULTI_CPU means mpirun), and
# ACCELERATE_USE_CPU makes the trainer take them as CPU ranks over gloo.
TWO_CPU_PROCESSES = {
    "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_processes": 2, "num_machines": 1, "machine_rank": 0,
    "mixed_precision": "no", "dynamo_backend": "NO", "gpu_ids": "all", "rdzv_backend": "static", "same_network": True,
}
ENV = {"COLUMNS": "200", "ACCELERATE_USE_CPU": "1"}
SAVED = ["checkpoint-1/model.safetensors", "checkpoint-2/model.safetensors", "model.safetensors"]
"""Where a two-step run with --save-steps 1 has weights: its checkpoints and the one model in OUT."""


def _command(tmp_path: Path, *args: str) -> list[str]:
    """`accelerate launch --config_file CONFIG -m r1distill.cli ARGS` with two CPU processes, on a free port."""
    config = tmp_path / "two-cpu-processes.yaml"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(yaml.safe_dump({**TWO_CPU_PROCESSES, "main_process_port": port}))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "r1distill.cli", *args]


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(tmp_path, *args), capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _saved_models(out: Path) -> list[str]:
    return sorted(str(path.relative_to(out)) for path in out.rglob("model.safetensors"))


def test_sft_on_two_processes_tokenizes_once_saves_once_and_resumes(tmp_path, tiny_model):
    rows = [{"messages": [{"role": "user", "content": f"Add {i} and {i}."}, {"role": "assistant", "content": f"<think>\n{i}+{i}\n</think>\n\n{2 * i}"}]}
            for i in range(16)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "student"
    # Five held-out prompts: the ranks answer three and two, and rank 0 scores all five.
    held_out = write_jsonl(tmp_path / "held-out.jsonl", [{"problem": f"Add {i} and 1.", "answer": str(i + 1)} for i in range(5)])
    args = ["sft", str(data), "-o", str(out), "--model", str(tiny_model), "--max-steps", "2", "--max-length", "64", "--batch-size", "2",
            "--grad-accum", "1", "--logging-steps", "1", "--save-steps", "1", "--eval-every", "2", "--eval-prompts", str(held_out), "--eval-max-tokens", "4"]
    result = _launch(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join(result.stderr.split())
    # Read and tokenized by one process; the other read its result from the cache, which is gone again.
    assert said.count("16 rows in, 0 dropped as longer than --max-length 64") == 1, said[-3000:]
    assert said.count("train/serve parity:") == 1
    shared = Path(os.environ["R1DISTILL_CACHE"]) / "shared"
    assert shared.is_dir() and list(shared.iterdir()) == []
    record = json.loads((out / "run.json").read_text())
    assert record["processes"] == 2 and record["finished"]["steps"] == 2
    metrics = _metrics(out)
    # Rank 0 alone writes metrics: each step once and one closing line.
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2] and sum("train_runtime" in m for m in metrics) == 1
    assert [(m["step"], m["eval_prompts"]) for m in metrics if "eval_pass@1" in m] == [(2, 5)]
    assert metrics[0]["epoch"] == pytest.approx(0.25)  # both ranks take 2 of the 8 packed rows a step: 2 steps of 4 an epoch
    assert _saved_models(out) == SAVED
    assert said.count("sft → ") == 1  # one summary table, not one per rank

    # A run killed after checkpoint-1 resumes from it under two processes and does step 2 again, the same way.
    first = [m for m in metrics if "loss" in m][1]
    shutil.rmtree(out / "checkpoint-2")
    for leftover in ("model.safetensors", "README.md"):
        (out / leftover).unlink()
    result = _launch(tmp_path, *args, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-1'}" in " ".join(result.stderr.split())
    metrics = _metrics(out)
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert [m for m in metrics if "loss" in m][1]["loss"] == pytest.approx(first["loss"], rel=1e-5)
    assert [m["step"] for m in metrics if "eval_pass@1" in m] == [2]  # scored again by the resumed run, not kept twice
    assert _saved_models(out) == SAVED and json.loads((out / "run.json").read_text())["processes"] == 2

    # A bad row found by the process that reads the data: every rank says the one line and exits, none waits
    # for it or dies in a collective, and nothing is left in the cache.
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "No answer here."}]}])
    result = _launch(tmp_path, "sft", str(bad), "-o", str(tmp_path / "bad"), "--model", str(tiny_model), "--max-length", "64")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: row 0 of 'messages' has no assistant turn: there is nothing to train on"] * 2, result.stderr[-3000:]
    assert "RuntimeError" not in result.stderr and list(shared.iterdir()) == [] and not (tmp_path / "bad").exists()


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (the launcher's: one process per rank)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _verifier_workers(ranks: list[int]) -> dict[int, int]:
    """Math-Verify workers per training process: the children of the forkserver each rank's pool starts."""
    return {rank: sum(len(_children(server)) for server in _children(rank)) for rank in ranks}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts the verifier's worker processes through /proc (Linux)")
def test_rl_on_two_processes_shares_the_prompts_and_splits_the_verifier_workers(tmp_path, tiny_model):
    # Fractions, not plain numbers: their gold answers go to the workers while the policy loads.
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"problem": f"What is {i} plus {i}?", "answer": f"\\frac{{{2 * i}}}{{1}}"} for i in range(1, 9)])
    out = tmp_path / "policy"
    command = _command(tmp_path, "rl", str(prompts), "-o", str(out), "--model", str(tiny_model), "--reward", "accuracy", "--reward", "format",
                       "--max-steps", "2", "--num-generations", "2", "--batch-size", "2", "--max-completion-length", "8", "--save-steps", "1")
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    most: dict[int, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            for rank, count in _verifier_workers(_children(launcher.pid)).items():
                most[rank] = max(most.get(rank, 0), count)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, stderr = launcher.communicate(timeout=300)
    finally:
        done.set()
        watcher.join()
        launcher.kill()
    assert launcher.returncode == 0, stderr[-3000:]
    # Each rank starts its share of this machine's cores, not all of them.
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert sorted(most.values()) == [share, share], most
    said = " ".join(stderr.split())
    assert said.count("8 rows in, 8 prompts") == 1, said[-3000:]  # read by one process
    record = json.loads((out / "run.json").read_text())
    assert record["processes"] == 2 and record["finished"]["steps"] == 2
    metrics = _metrics(out)
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2] and sum("train_runtime" in m for m in metrics) == 1
    assert _saved_models(out) == SAVED and said.count("rl → ") == 1
