"""r1distill run: recipe checks up front, skipping finished stages, resuming a killed one, rerunning
after a change, a failing stage's message, and the quickstart recipe itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def _recipe(path: Path, stages: dict, output: Path | None = None) -> Path:
    data = {"stages": stages} if output is None else {"output": str(output), "stages": stages}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _stages(url: str, n: int = 20, checks: list[str] | None = None, samples: int = 2) -> dict:
    """synth -> generate (a fake OpenAI server) -> filter: real stages that take seconds."""
    return {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": n, "seed": 1},
        "generate": {"input": "prompts", "model": "t", "backend": "openai", "base-url": url, "num-samples": samples, "concurrency": 4},
        "filter": {"input": "generate", "check": checks or ["format"]},
    }


def _actions(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The action per stage, from the run's summary table (stage | kind | action | ...)."""
    actions = {}
    for line in result.stderr.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[1] in ("synth", "generate", "filter", "sft", "rl", "eval", "report"):
            actions[cells[0]] = cells[2]
    return actions


def test_a_rerun_skips_finished_stages_and_a_change_reruns_that_stage_and_every_later_one(tmp_path, fake_server):
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path / "r.yaml", _stages(fake_server.url), run_dir)
    first = run_cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    assert _actions(first) == {"prompts": "run", "generate": "run", "filter": "run"}
    assert pl.read_parquet(run_dir / "generate" / "*.parquet").height == 40
    assert json.loads((run_dir / "filter" / "stats.json").read_text())["rows_in"] == 40
    served = fake_server.served

    again = run_cli("run", str(recipe))
    assert again.returncode == 0, again.stderr
    assert set(_actions(again).values()) == {"finished earlier, skipped"}
    assert fake_server.served == served  # nothing generated again

    # A changed filter setting reruns the filter only; a changed generate setting reruns it and the filter.
    _recipe(recipe, _stages(fake_server.url, checks=["format", "accuracy"]), run_dir)
    changed = run_cli("run", str(recipe))
    assert changed.returncode == 0, changed.stderr
    assert _actions(changed) == {"prompts": "finished earlier, skipped", "generate": "finished earlier, skipped", "filter": "rerun (settings changed)"}
    assert "accuracy_verdict" in pl.read_parquet(run_dir / "filter" / "scored" / "*.parquet").columns
    _recipe(recipe, _stages(fake_server.url, checks=["format", "accuracy"], samples=3), run_dir)
    more = run_cli("run", str(recipe))
    assert more.returncode == 0, more.stderr
    assert _actions(more) == {"prompts": "finished earlier, skipped", "generate": "rerun (settings changed)", "filter": "rerun (an earlier stage ran)"}
    assert json.loads((run_dir / "filter" / "stats.json").read_text())["rows_in"] == 60
    assert fake_server.served == served + 20  # a third sample per prompt: the first two were kept
    # Other prompts: generate starts over (the old rows answer prompts no longer asked), and so does the filter.
    stages = _stages(fake_server.url, checks=["format", "accuracy"], samples=3)
    stages["prompts"]["seed"] = 2
    _recipe(recipe, stages, run_dir)
    other = run_cli("run", str(recipe))
    assert other.returncode == 0, other.stderr
    assert _actions(other) == {"prompts": "rerun (settings changed)", "generate": "rerun (an earlier stage ran)", "filter": "rerun (an earlier stage ran)"}
    problems = set(pl.read_parquet(run_dir / "generate" / "*.parquet")["problem"])
    assert problems == {json.loads(line)["problem"] for line in (run_dir / "prompts" / "problems.jsonl").read_text().splitlines()}
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert all(entry["finished"] for entry in state.values())


def test_credentials_in_a_server_url_never_reach_the_run_record(tmp_path, fake_server):
    secret_url = fake_server.url.replace("http://", "http://trainer:hunter2-secret@")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(_recipe(tmp_path / "r.yaml", _stages(secret_url), run_dir)))
    assert result.returncode == 0, result.stderr
    assert "***" in (run_dir / "pipeline.json").read_text()
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".jsonl", ".yaml"):
            assert "hunter2-secret" not in path.read_text(errors="replace"), path
    assert "hunter2-secret" not in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_stage_resumes_with_what_it_had_finished(tmp_path, fake_server, stop):
    fake_server.delay = 0.05
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path / "r.yaml", _stages(fake_server.url, n=100), run_dir)
    process = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "run", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while fake_server.served < 60:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(stop)
    code = process.wait(timeout=60)
    killed_at = fake_server.served
    if stop == signal.SIGINT:  # one line, exit code 130, no traceback
        stderr = process.stderr.read().decode()
        assert code == 130, stderr
        assert stderr.strip().splitlines()[-1].startswith("interrupted: finished stages and samples are kept"), stderr
    assert killed_at < 200, "the run was killed before generate finished"
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["prompts"]["finished"] and state["generate"]["finished"] is None and "filter" not in state

    fake_server.delay = 0.0
    resumed = run_cli("run", str(recipe))
    assert resumed.returncode == 0, resumed.stderr
    assert _actions(resumed) == {"prompts": "finished earlier, skipped", "generate": "resume", "filter": "run"}
    # Only the requests in flight at the kill were made again.
    assert 200 <= fake_server.served <= 200 + 4 + (killed_at - 60)
    traces = pl.read_parquet(run_dir / "generate" / "*.parquet")
    assert traces.height == 200 and traces["id"].n_unique() == 200


def test_a_failing_stage_is_named_and_earlier_outputs_stay(tmp_path, fake_server):
    run_dir = tmp_path / "run"
    stages = _stages(fake_server.url)
    stages["filter"]["input"] = "prompts"  # a prompt table, not traces: the filter finds no completion column
    recipe = _recipe(tmp_path / "r.yaml", stages, run_dir)
    result = run_cli("run", str(recipe))
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "stage 'filter' (filter)" in line and "completion" in line and "earlier stages are kept" in line
    assert "Traceback" not in result.stderr
    assert pl.read_parquet(run_dir / "generate" / "*.parquet").height == 40
    state = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert state["generate"]["finished"] and state["filter"]["finished"] is None


def test_the_whole_recipe_is_checked_before_anything_runs(tmp_path, fake_server):
    stages = {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": "many"},
        "generate": {"input": "missing.jsonl", "base-url": fake_server.url, "backend": "openai", "temprature": 0.6},
        "filter": {"input": "sft", "output": "elsewhere", "check": ["accuracy", "vibes"]},
        "sft": {"input": "filter"},
        "judge": {"stage": "critique"},
    }
    recipe = _recipe(tmp_path / "r.yaml", stages, tmp_path / "run")
    result = run_cli("run", str(recipe))
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for needle in (
        "stage 'prompts': n must be int, got 'many'",
        "stage 'generate': input 'missing.jsonl' is neither an earlier stage nor an existing file or folder",
        "stage 'generate': unknown option 'temprature' for generate",
        "stage 'filter': input 'sft' is a stage that runs later",
        "stage 'filter': 'output' is set by the runner",
        "stage 'judge': unknown stage kind 'critique'",
    ):
        assert needle in line, needle
    assert not (tmp_path / "run").exists() and fake_server.served == 0
    # The stage's own checks run up front too (a bad choice of a list option).
    del stages["prompts"]["n"], stages["generate"]["temprature"], stages["judge"]
    stages["generate"]["input"] = "prompts"
    stages["filter"] = {"input": "generate", "check": ["accuracy", "vibes"]}
    _recipe(recipe, stages, tmp_path / "run")
    result = run_cli("run", str(recipe))
    assert result.returncode == 2 and "stage 'filter'" in result.stderr and "vibes" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_folder_the_runner_did_not_make_is_refused(tmp_path, fake_server):
    run_dir = tmp_path / "run"
    (run_dir / "generate").mkdir(parents=True)
    (run_dir / "generate" / "mine.txt").write_text("precious")
    result = run_cli("run", str(_recipe(tmp_path / "r.yaml", _stages(fake_server.url), run_dir)))
    assert result.returncode == 2 and "was not made by this run" in result.stderr
    assert (run_dir / "generate" / "mine.txt").read_text() == "precious"


@pytest.mark.train
def test_the_quickstart_recipe_is_valid_and_runs_every_stage(tmp_path):
    recipe = REPO / "recipes" / "quickstart.yaml"
    result = run_cli("run", str(recipe), "--check", "-o", str(tmp_path / "qs"))
    assert result.returncode == 0, result.stderr
    kinds = {stage.get("stage", name) for name, stage in yaml.safe_load(recipe.read_text())["stages"].items()}
    assert kinds == {"synth", "generate", "filter", "sft", "rl", "eval", "report"}
    assert set(_actions(result).values()) == {"would run"}
    assert not (tmp_path / "qs").exists()


def test_the_quickstart_shows_a_model_learning_to_think():
    """Issue 22: the quickstart exercises thinking at every stage, not only a short answer."""
    stages = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())["stages"]
    # Traces with thinking, by budget forcing (SmolLM2 never opens <think> itself), kept only in R1's format.
    assert stages["generate"]["thinking-budget"] >= 1 and {"accuracy", "format"} <= set(stages["filter"]["check"])
    # The student learns to open its own thinking: no template that pre-fills it.
    assert "template" not in stages["sft"] and stages["sft"]["input"] == "filter"
    # GRPO with R1-Zero's pair of rewards, and eval of the base and the trained models at two budgets at least.
    assert {"accuracy", "format"} <= set(stages["rl"]["reward"])
    assert len(str(stages["eval"]["thinking-budget"]).split(",")) >= 2 and {"smollm2-135m", "sft", "rl"} <= set(stages["eval"]["model"])


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(1800)
def test_the_quickstart_runs_end_to_end_on_the_cpu(tmp_path):
    """The README's first command, as written (minutes: the real SmolLM2 generates, trains and evaluates)."""
    run_dir = tmp_path / "qs"
    result = run_cli("run", str(REPO / "recipes" / "quickstart.yaml"), "-o", str(run_dir), timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = Path(result.stdout.strip().splitlines()[-1])
    assert report == run_dir / "report" / "report.html" and report.stat().st_size > 10_000
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert [model["metrics"]["pass@1"] is not None for model in results["models"]] == [True, True, True]
    # The traces think, the models are measured on their format and at two budgets, GRPO logs its two curves.
    assert pl.read_parquet(run_dir / "generate" / "traces-*.parquet")["reasoning"].null_count() == 0
    assert all(model["metrics"]["format_pass"] is not None and len(model["thinking_budget"]["forced"]) == 2 for model in results["models"])
    steps = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines() if '"reward"' in line]
    assert steps and all("format/pass" in step and "thinking/mean_tokens" in step for step in steps)


CPU_LAUNCH = {
    "compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "num_processes": 1, "num_machines": 1, "machine_rank": 0,
    "mixed_precision": "no", "use_cpu": True,
}


def _owned_by(pid: int) -> list[int]:
    """Processes whose environment names `pid` as their r1distill run (the stage it launched, and its workers)."""
    from r1distill.processes import OWNER_ENV

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{OWNER_ENV}={pid}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the launched processes through /proc (Linux)")
def test_a_stage_under_accelerate_launch_trains_and_dies_with_the_runner(tmp_path, tiny_model):
    launch = tmp_path / "cpu.yaml"
    launch.write_text(yaml.safe_dump(CPU_LAUNCH))
    rows = [{"messages": [{"role": "user", "content": f"Add {i} and {i}."}, {"role": "assistant", "content": f"<think>\n{i}+{i}\n</think>\n\n{2 * i}"}]} for i in range(8)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sft = {"input": str(data), "model": str(tiny_model), "max-steps": 2, "max-length": 64, "batch-size": 2, "grad-accum": 1, "accelerate": str(launch)}
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path / "r.yaml", {"sft": sft}, run_dir)
    result = run_cli("run", str(recipe))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "accelerate.commands.launch" in result.stderr and (run_dir / "sft" / "model.safetensors").exists()
    assert json.loads((run_dir / "sft" / "run.json").read_text())["settings"]["max_steps"] == 2

    # kill -9 of the runner mid-training takes the launcher and the training process with it.
    sft.update({"max-steps": 100_000, "save-steps": 100_000})
    _recipe(recipe, {"sft": sft}, tmp_path / "run2")
    runner = subprocess.Popen([sys.executable, "-m", "r1distill.cli", "run", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run2" / "sft" / "metrics.jsonl").exists():
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    assert _owned_by(runner.pid), "the launched stage runs in processes of its own"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 15
    while _owned_by(runner.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _owned_by(runner.pid) == []


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes" / "pipelines").glob("*.yaml")), ids=lambda path: path.stem)
def test_the_reference_gpu_recipes_have_no_problem_but_a_missing_gpu(recipe, tmp_path):
    # They cannot run here; every check but the GPU packages' presence (vllm, deepspeed: a GPU machine's) still applies.
    from r1distill.errors import UsageError
    from r1distill.pipeline.recipe import read

    try:
        read(recipe, str(tmp_path / "run"))
    except UsageError as err:
        problems = str(err).removeprefix(f"{recipe}: ").split("; stage ")
        # Without the training extra (CI's Python 3.10 run), sft and rl say so too.
        assert all("pip install 'r1distill[gpu]'" in problem or "needs the training extra" in problem for problem in problems), str(err)
