"""`executor: slurm` against a real single-node Slurm (.ci/slurm-up starts it; .ci/run does before the tests):
stages as dependent sbatch jobs with the results of the local executor, a generate stage as a job array,
a failing job stopping the later stages with its stage named, a rerun skipping finished stages.

    .ci/slurm-up && PYTHONPATH=.. python -m pytest tests/test_slurm.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import run_cli

needs_slurm = pytest.mark.skipif(shutil.which("sbatch") is None, reason="no sbatch on PATH: .ci/slurm-up starts a single-node Slurm (apt-get install slurm-wlm munge)")



def _recipe(path: Path, url: str, executor: str, run_dir: Path, *, array: int | None = None, n: int = 12) -> Path:
    generate = {"input": "prompts", "model": "t", "backend": "openai", "base-url": url, "num-samples": 2, "concurrency": 4,
                "slurm": {"cpus": 1, "mem": "1G", "time": "00:10:00"}}
    if array is not None:
        generate["slurm"]["array"] = array
    stages = {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": n, "seed": 1, "slurm": {"cpus": 1}},
        "generate": generate,
        "filter": {"input": "generate", "check": ["format"]},
    }
    path.write_text(yaml.safe_dump({"executor": executor, "output": str(run_dir), "stages": stages}, sort_keys=False))
    return path


def _rows(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "generate" / "*.parquet").select("id", "completion").sort("id")


def _kept(run_dir: Path) -> list[str]:
    return sorted(pl.read_parquet(run_dir / "filter" / "data" / "*.parquet")["id"].to_list())


def _submitted(result) -> dict[str, str]:
    """The job id per stage submitted, from the runner's `stage 'NAME' (KIND): ACTION as Slurm job ID` lines."""
    return dict(re.findall(r"stage '([\w.-]+)' \(\w+\): .*? as Slurm job (\d+)", result.stderr))


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@needs_slurm
def test_stages_run_as_dependent_jobs_with_the_local_results_and_a_rerun_skips_them(tmp_path, fake_server):
    local = run_cli("run", str(_recipe(tmp_path / "local.yaml", fake_server.url, "local", tmp_path / "local")))
    assert local.returncode == 0, local.stderr

    run_dir = tmp_path / "slurm"
    recipe = _recipe(tmp_path / "slurm.yaml", fake_server.url, "slurm", run_dir)
    first = run_cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    jobs = _submitted(first)
    assert list(jobs) == ["prompts", "generate", "filter"], first.stderr
    # Each stage ran in its own job, with this Python and this environment (the checkout on PYTHONPATH).
    script = subprocess.run(["scontrol", "write", "batch_script", jobs["generate"], "-"], capture_output=True, text=True, check=False).stdout
    assert script.splitlines()[-1].startswith(f"exec {sys.executable} -m r1distill.cli run ") and "--stage generate" in script, script
    logs = {stage: (run_dir / ".slurm" / f"{stage}-{job}.out").read_text() for stage, job in jobs.items()}
    assert "--stage" not in logs["prompts"] and "12 arithmetic problems" in logs["prompts"], logs
    assert "generate →" in logs["generate"] and "filter →" in logs["filter"], logs
    assert _rows(run_dir).equals(_rows(tmp_path / "local"))
    assert _kept(run_dir) == _kept(tmp_path / "local") and _kept(run_dir)
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert all(entry["finished"] for entry in state.values())

    served = fake_server.served
    again = run_cli("run", str(recipe))
    assert again.returncode == 0, again.stderr
    assert "as Slurm job" not in again.stderr and again.stderr.count("finished earlier, skipped") == 3, again.stderr
    assert fake_server.served == served

    # Other prompts: every stage runs again, each job in its own process seeing that the ones before it ran.
    stages = yaml.safe_load(recipe.read_text())
    stages["stages"]["prompts"]["seed"] = 2
    recipe.write_text(yaml.safe_dump(stages, sort_keys=False))
    other = run_cli("run", str(recipe))
    assert other.returncode == 0, other.stderr
    assert list(_submitted(other)) == ["prompts", "generate", "filter"], other.stderr
    assert "rerun (an earlier stage ran)" in (run_dir / ".slurm" / f"filter-{_submitted(other)['filter']}.out").read_text()
    problems = {json.loads(line)["problem"] for line in (run_dir / "prompts" / "problems.jsonl").read_text().splitlines()}
    assert set(pl.read_parquet(run_dir / "filter" / "data" / "*.parquet")["problem"]) == problems


@needs_slurm
def test_a_generate_array_splits_the_prompts_and_the_filter_reads_every_part(tmp_path, fake_server):
    local = run_cli("run", str(_recipe(tmp_path / "local.yaml", fake_server.url, "local", tmp_path / "local")))
    assert local.returncode == 0, local.stderr
    run_dir = tmp_path / "slurm"
    result = run_cli("run", str(_recipe(tmp_path / "slurm.yaml", fake_server.url, "slurm", run_dir, array=3)))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (run_dir / "generate").glob("manifest-*.json")) == [f"manifest-{i:05d}-of-00003.json" for i in range(3)]
    assert len(list((run_dir / ".slurm").glob("generate-*_*.out"))) == 3
    assert _rows(run_dir).equals(_rows(tmp_path / "local"))
    assert _kept(run_dir) == _kept(tmp_path / "local")
    entry = json.loads((run_dir / "pipeline.json").read_text())["stages"]["generate"]
    assert entry["finished"] and entry["parts_done"] == [0, 1, 2]


@needs_slurm
def test_a_failing_job_names_its_stage_and_cancels_the_later_ones(tmp_path, fake_server):
    run_dir = tmp_path / "slurm"
    # No server behind this URL: the recipe checks pass, generate fails when its job runs.
    recipe = _recipe(tmp_path / "slurm.yaml", _closed_port_url(), "slurm", run_dir)
    failed = run_cli("run", str(recipe))
    assert failed.returncode != 0, failed.stderr
    error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "stage 'generate' (generate): Slurm job" in error[0] and "failed" in error[0], failed.stderr
    assert "later stages' jobs" in error[0] and "cancelled" in error[0], error
    logfile = Path(error[0].split("its log: ")[1].split(";")[0])
    assert logfile.parent == run_dir / ".slurm" and "error:" in logfile.read_text()
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["prompts"]["finished"] and state["generate"]["finished"] is None and "filter" not in state

    # With the server up, the rerun submits generate and filter only.
    fixed = _recipe(tmp_path / "slurm.yaml", fake_server.url, "slurm", run_dir)
    rerun = run_cli("run", str(fixed))
    assert rerun.returncode == 0, rerun.stderr
    assert list(_submitted(rerun)) == ["generate", "filter"], rerun.stderr
    assert _kept(run_dir)


def test_slurm_resources_are_checked_with_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"executor": "slurm", "stages": {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": 4, "slurm": {"cpus": 0, "mem": "lots", "gpus": 1}},
        "report": {"inputs": ["prompts"], "slurm": {"array": 2}},
    }}))
    result = run_cli("run", str(recipe), "--check")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    for part in ("stage 'prompts': slurm: unknown key 'gpus'", "cpus must be a whole number", "mem 'lots' is not a Slurm mem", "stage 'report': slurm: array is taken by generate stages only"):
        assert part in line, line


@needs_slurm
def test_ctrl_c_cancels_the_jobs_it_submitted(tmp_path, fake_server):
    fake_server.delay = 1.0  # generate's job runs for a while
    run_dir = tmp_path / "slurm"
    recipe = _recipe(tmp_path / "slurm.yaml", fake_server.url, "slurm", run_dir, n=40)
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "run", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "COLUMNS": "200"}, text=True)
    deadline = time.monotonic() + 120
    while fake_server.served == 0:  # generate's job is running, filter's waits for it
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no request"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    lines = process.stderr.read().strip().splitlines()
    assert lines[-1].startswith("interrupted: finished stages and samples are kept"), lines
    cancelled = re.search(r"cancelled this run's Slurm jobs ([\d ]+)", "\n".join(lines))
    assert cancelled, lines
    jobs = cancelled.group(1).split()
    assert len(jobs) == 2  # generate's, running, and filter's, waiting
    while subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True, check=False).stdout.strip():
        assert time.monotonic() < deadline, "the cancelled jobs are still queued"
        time.sleep(0.2)
    for job in jobs:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False).stdout
        assert "JobState=CANCELLED" in shown, shown


def test_one_stage_runs_alone_once_the_stages_before_it_finished(tmp_path, fake_server):
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path / "r.yaml", fake_server.url, "local", run_dir)
    early = run_cli("run", str(recipe), "--stage", "filter")
    assert early.returncode == 2
    assert "--stage 'filter': the stages before it are not all finished: prompts (run), generate (run)" in early.stderr, early.stderr
    for stage in ("prompts", "generate", "filter"):
        alone = run_cli("run", str(recipe), "--stage", stage)
        assert alone.returncode == 0, alone.stderr
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert list(state) == ["prompts", "generate", "filter"] and all(entry["finished"] for entry in state.values())
    assert "finished earlier, skipped" in run_cli("run", str(recipe), "--stage", "generate").stderr
    unknown = run_cli("run", str(recipe), "--stage", "sft")
    assert unknown.returncode == 2 and "the recipe has no such stage" in unknown.stderr


@needs_slurm
def test_a_job_sbatch_refuses_cancels_the_ones_submitted_before_it(tmp_path, fake_server):
    run_dir = tmp_path / "slurm"
    recipe = _recipe(tmp_path / "slurm.yaml", fake_server.url, "slurm", run_dir)
    data = yaml.safe_load(recipe.read_text())
    data["stages"]["filter"]["slurm"] = {"partition": "no-such-partition"}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = run_cli("run", str(recipe))
    assert refused.returncode == 1, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: stage 'filter': sbatch refused the job") and "partition" in error, error
    jobs = re.search(r"the jobs submitted before it \(([\d ]+)\) are cancelled", error).group(1).split()
    assert jobs == list(_submitted(refused).values())
    # generate's job waited on the synth's, so it never ran; the synth's may have been quicker than the cancel.
    states = [re.search(r"JobState=(\S+)", subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False).stdout).group(1) for job in jobs]
    assert states[1] == "CANCELLED" and states[0] in ("CANCELLED", "COMPLETED"), states
    record = run_dir / "pipeline.json"
    assert not record.exists() or "generate" not in json.loads(record.read_text())["stages"]
