"""`--executor ray` on a real local Ray cluster: generate's rows and filter's verdicts as the local
executor makes them, with no row lost or duplicated when an actor or the driver is killed.

One `ray start --head --num-cpus 2 --block` for the module (Ray's start-up is the slow part), tied to
the test process so it dies with it; the tests join it through --ray-address. The last test starts no
cluster of its own: the command starts one and must take it down when it is killed.

    PYTHONPATH=.. python -m pytest tests/test_ray.py -q
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml

from conftest import assert_usage_error, run_cli, write_jsonl
from r1distill.errors import UsageError
from r1distill.filter.run import FilterConfig, filter_traces
from r1distill.generate import GenerateConfig, generate
from r1distill.generate.store import JOURNAL_DIR
from r1distill.processes import die_with_parent

pytestmark = [pytest.mark.train, pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install 'r1distill[ray]'")]

PROMPTS, SAMPLES = 8, 2
ROWS = PROMPTS * SAMPLES
# One request per batch: the transformers backend seeds a batch from its first key, so each row's
# completion is a function of its own key, whichever actor and batch it lands in.
SETTINGS = {"num_samples": SAMPLES, "max_tokens": 8, "batch_size": 1}
ACTOR_TITLE = "ray::MapWorker(MapBatches(Generator))"


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """host:port of a one-node Ray cluster with 2 CPUs, stopped after the module (and with the test process).

    Token authentication off for the head and every driver of the module, this process included: Ray reads
    RAY_AUTH_MODE once, when it is first imported, and other test modules import it before this one (the
    doctests import every module). Set where ~/.ray/auth_token exists, which would turn it on for the head.
    """
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
        "--node-ip-address", "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats",
        "--temp-dir", str(tmp_path_factory.mktemp("ray")),
    ]
    head = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent)
    seen = []
    for line in head.stdout:
        seen.append(line)
        if "Ray runtime started" in line:
            break
    else:
        pytest.fail("ray start did not come up:\n" + "".join(seen))
    # Its output is no longer read: drained, so a full pipe never blocks the head.
    threading.Thread(target=head.stdout.read, daemon=True).start()
    yield f"127.0.0.1:{port}"
    head.send_signal(signal.SIGTERM)  # --block stops the node's processes on SIGTERM
    head.wait(timeout=60)
    if previous is None:
        os.environ.pop("RAY_AUTH_MODE")
    else:
        os.environ["RAY_AUTH_MODE"] = previous


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prompts")
    return write_jsonl(folder / "p.jsonl", [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(PROMPTS)])


@pytest.fixture(scope="module")
def local_rows(prompts, tiny_model, tmp_path_factory) -> pl.DataFrame:
    """The rows `--executor local` makes: what every Ray run below must reproduce."""
    out = tmp_path_factory.mktemp("local") / "out"
    generate(GenerateConfig(str(prompts), str(out), model=str(tiny_model), **SETTINGS))
    return _rows(out)


def _rows(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "*.parquet").select("id", "prompt_id", "sample", "completion", "finish_reason", "completion_tokens").sort("id")


def _assert_same_rows(out: Path, local_rows: pl.DataFrame) -> None:
    rows = pl.read_parquet(out / "*.parquet")
    assert not rows["id"].is_duplicated().any(), "a row was written twice"
    assert rows.height == ROWS, "a row was lost"
    assert _rows(out).equals(local_rows)


def _persisted_rows(out: Path) -> int:
    """Rows a rerun would find: in shards, plus whole lines in journals."""

    def lines(path: Path) -> int:
        try:
            return path.read_bytes().count(b"\n")
        except FileNotFoundError:  # turned into a shard since the glob
            return 0

    shards = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in out.glob("traces-*.parquet"))
    return shards + sum(lines(p) for p in out.glob(f"{JOURNAL_DIR}/*/*.jsonl"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "r1distill.cli", *args]


def test_two_actors_write_the_rows_the_local_executor_writes(tmp_path, prompts, tiny_model, local_rows, ray_address):
    out = tmp_path / "out"
    summary = generate(GenerateConfig(str(prompts), str(out), model=str(tiny_model), executor="ray", ray_address=ray_address, replicas=2, **SETTINGS))
    assert (summary.rows, summary.present, summary.generated) == (ROWS, ROWS, ROWS)
    _assert_same_rows(out, local_rows)
    manifest = (out / "manifest.json").read_text()
    assert '"executor": "ray"' in manifest and '"replicas": 2' in manifest


def test_an_actor_killed_mid_run_loses_and_duplicates_no_row(tmp_path, prompts, tiny_model, local_rows, ray_address):
    out = tmp_path / "out"
    killed: dict[str, int] = {}

    def kill_an_actor() -> None:
        # Once some rows are journaled, SIGKILL the worker process of one of the generating actors.
        while "pid" not in killed:
            actors = [p for p in psutil.process_iter(["pid", "cmdline"]) if ACTOR_TITLE in " ".join(p.info["cmdline"] or [])]
            persisted = _persisted_rows(out) if out.exists() else 0
            if actors and persisted >= 2:
                killed.update(pid=actors[0].pid, persisted=persisted)
                actors[0].kill()
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor, daemon=True)
    killer.start()
    generate(GenerateConfig(str(prompts), str(out), model=str(tiny_model), executor="ray", ray_address=ray_address, replicas=2, **SETTINGS))
    killer.join(timeout=1)
    assert "pid" in killed and killed["persisted"] < ROWS, f"the actor was killed mid-run ({killed})"
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    _assert_same_rows(out, local_rows)


def test_the_driver_killed_mid_run_then_rerun_resumes_with_no_gap_and_no_duplicate(tmp_path, prompts, tiny_model, local_rows, ray_address):
    out = tmp_path / "out"
    args = _cli("generate", str(prompts), "-o", str(out), "-m", str(tiny_model), "-n", str(SAMPLES), "--max-tokens", "8", "--batch-size", "1",
                "--executor", "ray", "--ray-address", ray_address, "--replicas", "2")
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not out.exists() or _persisted_rows(out) < 3:
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert _persisted_rows(out) < ROWS, "the driver was killed before it finished"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stderr
    _assert_same_rows(out, local_rows)


def test_filter_on_ray_gives_the_local_verdicts_and_stats(tmp_path, ray_address):
    thinking = "<think>\nWe add the two numbers.\n</think>\n\n"
    rows = [
        {"id": f"q{i}:{s}", "prompt_id": f"q{i}", "sample": s, "problem": f"What is {i} + {i}?", "answer": str(2 * i),
         "completion": thinking + (f"The answer is \\boxed{{{2 * i + s % 2}}}." if i % 3 else "no answer, and no closing tag"),
         "finish_reason": "stop" if (i + s) % 5 else "length", "completion_tokens": 20 + i}
        for i in range(30) for s in range(3)
    ]
    source = write_jsonl(tmp_path / "traces.jsonl", rows)
    common = {"workers": 1, "batch_rows": 16, "keep": "first:1"}
    filter_traces(FilterConfig(str(source), str(tmp_path / "local"), **common))
    filter_traces(FilterConfig(str(source), str(tmp_path / "ray"), executor="ray", ray_address=ray_address, replicas=2, **common))
    local = pl.read_parquet(tmp_path / "local" / "scored" / "*.parquet")
    on_ray = pl.read_parquet(tmp_path / "ray" / "scored" / "*.parquet")
    assert on_ray.equals(local)
    assert set(local["drop_reason"].drop_nulls()) >= {"accuracy", "truncated"}, "the input exercises several verdicts"
    stats = [(tmp_path / run / "stats.json").read_text() for run in ("local", "ray")]
    assert stats[0] == stats[1]
    assert pl.read_parquet(tmp_path / "ray" / "data" / "*.parquet").equals(pl.read_parquet(tmp_path / "local" / "data" / "*.parquet"))


def test_bad_cluster_options_are_one_line_before_anything_is_written(tmp_path, prompts):
    from typer.testing import CliRunner

    from r1distill.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", str(prompts), "-o", str(out), "--replicas", "2", "--ray-address", "127.0.0.1:1"])
    assert_usage_error(result, "--ray-address and --replicas only apply to --executor ray", out)
    result = CliRunner().invoke(app, ["filter", str(prompts), "-o", str(out), "--executor", "ray", "--replicas", "0", "--check", "judge",
                                      "--judge-model", "j", "--judge-base-url", "http://127.0.0.1:1/v1"])
    assert_usage_error(result, "--replicas must be at least 1", out)
    assert "--check judge scores with --executor local" in result.stderr
    result = CliRunner().invoke(app, ["generate", str(prompts), "-o", str(out), "--executor", "spark"])
    assert_usage_error(result, "--executor must be one of local, ray", out)


def test_eval_hands_the_cluster_settings_to_the_generate_it_runs(tmp_path, prompts):
    from r1distill.eval.config import EvalConfig

    cfg = EvalConfig(benchmark=str(prompts), output=str(tmp_path / "eval"), executor="ray", ray_address="127.0.0.1:6379", replicas=3)
    generation = cfg.generate_config("m", str(prompts), str(tmp_path / "samples"))
    assert (generation.executor, generation.ray_address, generation.replicas) == ("ray", "127.0.0.1:6379", 3)
    scoring_only = EvalConfig(completions=str(prompts), output=str(tmp_path / "eval"), executor="ray")
    with pytest.raises(UsageError, match="with --completions nothing is generated"):
        scoring_only.check()


def test_the_local_cluster_a_command_starts_dies_with_it(tmp_path, prompts, tiny_model):
    out = tmp_path / "out"
    # Without --ray-address the command starts a cluster of its own (even beside the module's).
    args = _cli("generate", str(prompts), "-o", str(out), "-m", str(tiny_model), "-n", "50", "--max-tokens", "8", "--executor", "ray")
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    for line in driver.stderr:
        if "Ray: started a local cluster" in line:
            break
    else:
        pytest.fail(f"the command ended without starting a cluster (exit {driver.wait()})")
    cluster = psutil.Process(driver.pid).children(recursive=True)
    # The head's own processes, which Ray ties to the driver, and its agents, which it does not.
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {p.name() for p in cluster}
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # Ray's agents alone would linger a minute (a 60 s call to the dead head); the guard ends them at once.
    deadline = time.monotonic() + 30
    while _alive(cluster):
        assert time.monotonic() < deadline, f"outlived the command: {[p.name() for p in _alive(cluster)]}"
        time.sleep(0.2)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _ray_recipe(path: Path, url: str, run_dir: Path, address: str | None, executor: str = "ray") -> Path:
    stages = {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": 6, "seed": 1, "ray": {"cpus": 1}},
        "generate": {"input": "prompts", "model": "t", "backend": "openai", "base-url": url, "num-samples": 2, "ray": {"cpus": 1}},
        "filter": {"input": "generate", "check": ["format"]},
    }
    recipe = {"executor": executor, "output": str(run_dir), "stages": stages} | ({"ray-address": address} if address else {})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_run_with_executor_ray_runs_each_stage_as_a_ray_task_with_the_local_results_and_a_rerun_skips_them(tmp_path, fake_server, ray_address):
    local = run_cli("run", str(_ray_recipe(tmp_path / "local.yaml", fake_server.url, tmp_path / "local", None, "local")))
    assert local.returncode == 0, local.stderr
    run_dir = tmp_path / "ray"
    recipe = _ray_recipe(tmp_path / "ray.yaml", fake_server.url, run_dir, ray_address)
    first = run_cli("run", str(recipe), timeout=600)
    assert first.returncode == 0, first.stderr
    # Each stage's command ran in a Ray worker, its output in RUN_DIR/.ray.
    logs = {stage: (run_dir / ".ray" / f"{stage}.out").read_text() for stage in ("prompts", "generate", "filter")}
    assert "6 arithmetic problems" in logs["prompts"] and "generate →" in logs["generate"] and "filter →" in logs["filter"], logs
    rows = lambda folder: pl.read_parquet(folder / "generate" / "*.parquet").select("id", "completion").sort("id")  # noqa: E731
    assert rows(run_dir).equals(rows(tmp_path / "local"))
    kept = lambda folder: sorted(pl.read_parquet(folder / "filter" / "data" / "*.parquet")["id"].to_list())  # noqa: E731
    assert kept(run_dir) == kept(tmp_path / "local")
    requests = len(fake_server.requests)
    again = run_cli("run", str(recipe), timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("skip") >= 3 and "on Ray" not in again.stderr and len(fake_server.requests) == requests


def test_a_failing_stage_on_ray_is_named_with_its_log_and_the_later_stages_do_not_run(tmp_path, ray_address):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    run_dir = tmp_path / "ray"
    result = run_cli("run", str(_ray_recipe(tmp_path / "ray.yaml", url, run_dir, ray_address)), timeout=600)
    assert result.returncode != 0
    line = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "stage 'generate' (generate): its Ray task's command exited with code" in line and str(run_dir / ".ray" / "generate.out") in line, line
    assert not (run_dir / "filter").exists() and (run_dir / "prompts" / "problems.jsonl").exists()


def test_ray_resources_and_the_address_are_checked_with_the_recipe(tmp_path, fake_server):
    recipe = _ray_recipe(tmp_path / "r.yaml", fake_server.url, tmp_path / "run", None)
    data = yaml.safe_load(recipe.read_text())
    data["stages"]["generate"]["ray"] = {"gpus": -1, "nodes": 2}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli("run", str(recipe), "--check")
    assert result.returncode == 2 and "stage 'generate': ray: unknown key 'nodes'" in result.stderr and "ray: gpus must be a number >= 0" in result.stderr, result.stderr
    data["stages"]["generate"].pop("ray")
    data |= {"executor": "local", "ray-address": "head:6379"}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli("run", str(recipe), "--check")
    assert result.returncode == 2 and "ray-address is the Ray cluster of `executor: ray`" in result.stderr, result.stderr

