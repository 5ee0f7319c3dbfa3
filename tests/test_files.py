"""Outputs in shared folders: no stage writes through a link planted at a name it uses, no write leaves half
a file (or its temporary) behind, and a damaged run.json is one line.

    PYTHONPATH=.. python -m pytest -q tests/test_files.py
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import write_jsonl
from r1distill import files
from r1distill.cli import app
from r1distill.errors import StageError, UsageError
from r1distill.generate import GenerateConfig, generate
from r1distill.generate.store import JOURNAL_DIR, TraceStore
from r1distill.schema import trace_table

TAG = "00000-of-00001"
VICTIM = "someone's file: no r1distill run may change it\n"


def _plant(link: Path, tmp_path: Path, name: str = "victim.txt") -> Path:
    """A symlink at `link` to a file outside every output, as another user of a shared folder could make."""
    victim = tmp_path / name
    victim.write_text(VICTIM)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return victim


def _training_run(out: Path) -> Path:
    """An sft OUT as training/output.py and training/callbacks.py write it (run.json, metrics.jsonl)."""
    from r1distill.distill.config import SFTConfig

    out.mkdir(parents=True)
    settings = dataclasses.asdict(SFTConfig("data.jsonl", "model", max_steps=2, logging_steps=1))
    (out / "run.json").write_text(json.dumps({"settings": settings, "started": "2025-01-01T00:00:00+00:00", "template": "chatml", "finished": None}))
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "epoch": s / 2, "loss": 2.0 / s}) + "\n" for s in (1, 2)))
    return out


def _generate_cfg(tmp_path: Path, server) -> GenerateConfig:
    source = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "problem": f"{i}+{i}?"} for i in range(3)])
    return GenerateConfig(str(source), str(tmp_path / "out"), model="t", backend="openai", base_urls=[server.url], retry_delay=0.01)


def test_report_does_not_write_through_a_link_at_its_old_temporary_name(tmp_path):
    from r1distill.report.config import ReportConfig
    from r1distill.report.run import report

    run = _training_run(tmp_path / "sft")
    out = tmp_path / "shared" / "report.html"
    victim = _plant(out.with_name(f".{out.name}.{os.getpid()}.tmp"), tmp_path)
    report(ReportConfig([str(run)], str(out)))
    assert victim.read_text() == VICTIM
    assert not out.is_symlink() and "r1distill report" in out.read_text()


def test_eval_does_not_write_results_or_samples_through_links_at_their_old_temporary_names(tmp_path):
    from r1distill.eval import EvalConfig, evaluate

    table = write_jsonl(tmp_path / "made-elsewhere.jsonl", [{"problem": "2+2?", "answer": "4", "completion": "<think>\nok\n</think>\n\n\\boxed{4}"}])
    out = tmp_path / "out"
    evaluate(EvalConfig(completions=str(table), output=str(out), workers=1))
    # A rerun into the same OUT (another --group-by, more completions) writes both files again.
    results = _plant(out / ".results.json.tmp", tmp_path, "results-victim.txt")
    samples = _plant(out / ".samples.parquet.tmp", tmp_path, "samples-victim.txt")
    summary = evaluate(EvalConfig(completions=str(table), output=str(out), workers=1))
    assert results.read_text() == VICTIM and samples.read_text() == VICTIM
    assert json.loads((out / "results.json").read_text())["models"][0]["metrics"] == summary.results["models"][0]["metrics"]


def test_generate_refuses_a_link_at_its_lock_and_leaves_its_target_alone(tmp_path, fake_server):
    cfg = _generate_cfg(tmp_path, fake_server)
    lock = Path(cfg.output) / JOURNAL_DIR / TAG / "lock"
    victim = _plant(lock, tmp_path)
    with pytest.raises(UsageError, match=rf"{lock}: is a symbolic link or not a regular file; r1distill never writes through one"):
        generate(cfg)
    assert victim.read_text() == VICTIM and fake_server.served == 0


def test_compaction_refuses_a_link_at_its_lock(tmp_path):
    out = tmp_path / "out"
    victim = _plant(out / JOURNAL_DIR / "compact.lock", tmp_path)
    with TraceStore(out, TAG, trace_table) as store, pytest.raises(UsageError, match="compact.lock: is a symbolic link"):
        store.compact()
    assert victim.read_text() == VICTIM


def test_generate_does_not_write_its_manifest_through_a_link_at_its_old_temporary_name(tmp_path, fake_server):
    cfg = _generate_cfg(tmp_path, fake_server)
    victim = _plant(Path(cfg.output) / ".manifest.json.tmp", tmp_path)
    assert generate(cfg).generated == 3
    assert victim.read_text() == VICTIM
    assert json.loads((Path(cfg.output) / "manifest.json").read_text())["runs"][0]["counts"]


def test_a_restarted_store_removes_only_the_temporaries_a_killed_run_left(tmp_path):
    journal = tmp_path / "out" / JOURNAL_DIR / TAG
    journal.mkdir(parents=True)
    (journal / ".traces-x.parquet.k1ll3d00.tmp").write_bytes(b"half a shard")
    (journal / "notes.tmp").write_text("the user's")
    with TraceStore(tmp_path / "out", TAG, trace_table):
        pass
    assert sorted(p.name for p in journal.iterdir()) == ["lock", "notes.tmp"]


def test_the_run_state_is_not_written_through_a_link_at_its_old_temporary_name(tmp_path):
    from r1distill.pipeline.run import RunConfig, run_pipeline

    run_dir = tmp_path / "run"
    victim = _plant(run_dir / "pipeline.json.partial", tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output": str(run_dir), "stages": {"prompts": {"stage": "synth", "task": "arithmetic", "n": 3}}}))
    run_pipeline(RunConfig(str(recipe)))
    assert victim.read_text() == VICTIM
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"]["prompts"]["finished"]


@pytest.mark.train
def test_the_launch_file_is_new_private_and_removed_and_never_written_through_a_link(tmp_path):
    from r1distill.pipeline.run import RunConfig, run_pipeline

    run_dir = tmp_path / "run"
    victim = _plant(run_dir / ".sft.launch.yaml", tmp_path)
    # A launch file a kill -9 left behind (it may hold credentials): the next launch of the stage removes it.
    left = run_dir / f".sft.launch.yaml.k1ll3d00{files.TEMP_SUFFIX}"
    left.write_text("model: old\n")
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    broken = tmp_path / "launch.yaml"
    broken.write_text("compute_environment: [not a launch config\n")  # accelerate exits at once: only the file matters here
    recipe = tmp_path / "r.yaml"
    stages = {"sft": {"input": str(data), "model": "smollm2-135m", "max-steps": 1, "accelerate": str(broken)}}
    recipe.write_text(yaml.safe_dump({"output": str(run_dir), "stages": stages}))
    with pytest.raises(StageError, match="accelerate launch exited"):
        run_pipeline(RunConfig(str(recipe)))
    assert victim.read_text() == VICTIM
    assert sorted(p.name for p in run_dir.iterdir()) == [".sft.launch.yaml", "pipeline.json", "sft"]


@pytest.mark.train
def test_run_json_and_the_metrics_kept_on_resume_are_not_written_through_links(tmp_path):
    from r1distill.training import output

    out = tmp_path / "sft"
    run = _plant(out / "run.json", tmp_path, "run-victim.txt")
    metrics = _plant(out / "metrics.jsonl", tmp_path, "metrics-victim.txt")
    metrics.write_text('{"step": 1, "loss": 2.0}\n{"step": 5, "loss": 1.0}\n')
    output.start(out, str(out / "checkpoint-1"), {"settings": {"model": "m"}, "finished": None})
    assert run.read_text() == VICTIM and metrics.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 5, "loss": 1.0}\n'
    assert json.loads((out / "run.json").read_text())["settings"] == {"model": "m"}
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n'


@pytest.mark.train
def test_a_full_disk_keeps_the_old_run_json_and_leaves_no_temporary(small_disk):
    from r1distill.training import output

    folder, _ = small_disk
    output.write_run(folder, {"settings": {"model": "m"}})
    before = (folder / "run.json").read_text()
    with pytest.raises(OSError, match="No space left"):
        output.write_run(folder, {"settings": {"model": "m", "notes": "x" * 200_000}})
    assert (folder / "run.json").read_text() == before and sorted(p.name for p in folder.iterdir()) == ["run.json"]


def test_a_full_disk_keeps_the_old_synth_output_and_leaves_no_temporary(small_disk):
    from r1distill.synth.run import SynthConfig, synth

    folder, _ = small_disk
    out = folder / "problems.jsonl"
    synth(SynthConfig("arithmetic", str(out), n=10))
    before = out.read_text()
    with pytest.raises(OSError, match="No space left"):
        synth(SynthConfig("arithmetic", str(out), n=5000, seed=2))
    assert out.read_text() == before and sorted(p.name for p in folder.iterdir()) == ["problems.jsonl"]


def test_an_exception_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "table.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-write"), files.replacing(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["table.bin"]


def test_a_new_file_gets_the_umask_permissions_and_a_launch_file_is_private(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_text(tmp_path / "card.md", "card")
        secret = files.private_temp(tmp_path, "x.launch.yaml", b"token: t")
    finally:
        os.umask(old)
    assert (tmp_path / "card.md").stat().st_mode & 0o777 == 0o640 and secret.stat().st_mode & 0o777 == 0o600


@pytest.mark.train
@pytest.mark.parametrize("content", ['{"settings": {"model": "m"', "not json", '["a list"]', '{"started": "then"}', '{"settings": 3}'])
def test_a_damaged_run_json_is_one_line_naming_it(tmp_path, content):
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    out = tmp_path / "sft"
    out.mkdir()
    (out / "run.json").write_text(content)
    result = CliRunner().invoke(app, ["sft", str(data), "-o", str(out), "--model", "smollm2-135m"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{out / 'run.json'}: unreadable" in errors[0] and "Traceback" not in result.stderr, result.stderr
