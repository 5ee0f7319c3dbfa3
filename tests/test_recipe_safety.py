"""r1distill run never writes or removes outside what it made: stage names that are plain folder names,
no clearing through a link or of a folder pipeline.json does not record, and integer options that are
whole numbers a stage can hold.

    PYTHONPATH=.. python -m pytest -q tests/test_recipe_safety.py
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from r1distill.errors import UsageError
from r1distill.pipeline.recipe import read


def _recipe(path: Path, stages: dict, output: Path) -> Path:
    path.write_text(yaml.safe_dump({"output": str(output), "stages": stages}, sort_keys=False))
    return path


def _synth(n: int = 4) -> dict:
    return {"stage": "synth", "task": "arithmetic", "n": n, "seed": 1}


def _error_line(result) -> str:
    """The one `error:` line of a refused run (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr
    return line


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "pipeline.json", "Pipeline.JSON", "-x"])
def test_a_stage_name_that_is_not_a_plain_folder_name_is_refused_at_check(tmp_path, name):
    run_dir = tmp_path / "runs" / "a"
    line = _error_line(run_cli("run", str(_recipe(tmp_path / "r.yaml", {name: _synth()}, run_dir)), "--check"))
    assert f"stage '{name}': a stage name starts with a letter or digit" in line and "pipeline.json" in line
    assert not (tmp_path / "runs").exists()


def test_a_stage_named_dot_dot_is_refused_and_the_sibling_folder_survives(tmp_path):
    # Before, a pipeline.json that recorded '..' (a first run of such a recipe) made a rerun clear RUN_DIR/..
    runs = tmp_path / "runs"
    sibling = runs / "b"
    sibling.mkdir(parents=True)
    (sibling / "keep.txt").write_text("another run")
    run_dir = runs / "a"
    run_dir.mkdir()
    state = {"stages": {"..": {"kind": "synth", "fingerprint": "0" * 16, "settings": {}, "started": "", "finished": "yes"}}}
    (run_dir / "pipeline.json").write_text(json.dumps(state))
    line = _error_line(run_cli("run", str(_recipe(tmp_path / "r.yaml", {"..": _synth()}, run_dir))))
    assert "stage '..'" in line and "a stage name starts with a letter or digit" in line
    assert (sibling / "keep.txt").read_text() == "another run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["pipeline.json"]


def test_a_stage_folder_that_is_a_link_to_an_outside_folder_is_neither_cleared_nor_written(tmp_path):
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path / "r.yaml", {"prompts": _synth(4)}, run_dir)
    first = run_cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    for path in (run_dir / "prompts").iterdir():
        path.unlink()
    (run_dir / "prompts").rmdir()
    (run_dir / "prompts").symlink_to(outside)
    # A changed option reruns the stage, which clears its folder first.
    _recipe(recipe, {"prompts": _synth(5)}, run_dir)
    for args in (("--check",), ()):
        line = _error_line(run_cli("run", str(recipe), *args))
        assert "stage 'prompts'" in line and "is a symbolic link" in line and "left alone" in line
        assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and (outside / "keep.txt").read_text() == "precious"
        assert (run_dir / "prompts").is_symlink()


def test_a_folder_pipeline_json_does_not_record_is_never_removed(tmp_path):
    # An empty folder the user made (a mount point, a folder with its own permissions) is used as it is.
    run_dir = tmp_path / "run"
    (run_dir / "prompts").mkdir(parents=True)
    (run_dir / "prompts").chmod(0o750)
    result = run_cli("run", str(_recipe(tmp_path / "r.yaml", {"prompts": _synth(4)}, run_dir)))
    assert result.returncode == 0, result.stderr
    # A folder removed and made again would have the umask's permissions (an inode number can be reused).
    assert stat.S_IMODE(os.stat(run_dir / "prompts").st_mode) == 0o750, "the folder was removed and made again"
    assert (run_dir / "prompts" / "problems.jsonl").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("n", 1e99), ("n", "1e99"), ("n", 2.5), ("n", float("inf")), ("seed", 2**53 + 1), ("seed", "9007199254740993")],
    ids=["1e99", "1e99-text", "2.5", "inf", "2**53+1", "2**53+1-text"],
)
def test_an_integer_option_must_be_a_whole_number_a_stage_can_hold(tmp_path, option, value):
    stage = _synth() | {option: value}
    with pytest.raises(UsageError) as refused:
        read(_recipe(tmp_path / "r.yaml", {"prompts": stage}, tmp_path / "run"))
    assert f"stage 'prompts': {option} must be" in str(refused.value)


def test_a_huge_count_is_one_line_at_check(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\nstages:\n  prompts: {{stage: synth, task: arithmetic, n: 1e99}}\n")
    line = _error_line(run_cli("run", str(recipe), "--check"))
    assert "stage 'prompts': n must be a whole number of at most 2**53" in line
    # Whole numbers written as floats still mean what they say.
    recipe.write_text(f"output: {tmp_path / 'run'}\nstages:\n  prompts: {{stage: synth, task: arithmetic, n: 1e3, seed: 7.0}}\n")
    [stage] = read(recipe).stages
    assert (stage.settings.n, stage.settings.seed) == (1000, 7)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_float_option_must_be_finite(tmp_path, value):
    # YAML reads .nan and .inf as floats; a temperature of nan would sample garbage for days.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output: {tmp_path / 'run'}\nstages:\n  prompts: {{stage: synth, task: arithmetic, n: 4}}\n"
                      f"  generate: {{input: prompts, temperature: {value}}}\n")
    line = _error_line(run_cli("run", str(recipe), "--check"))
    assert "stage 'generate': temperature must be a finite number" in line
