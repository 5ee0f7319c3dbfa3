"""The wheel as `pip install r1distill` gives it, in a fresh virtualenv of its own: every subpackage and
recipe ships, every command's --help runs, and the core (no training extra) generates over an
OpenAI-compatible server, filters, evaluates given completions, reports and runs a recipe without
torch, while sft, rl and the local model name the extra they need in one line.

    PYTHONPATH=.. python -m pytest -q tests/test_packaging.py

Slow (a few minutes): the wheel is built as `pip wheel .` builds it (the build's own setuptools, which
a Python 3.10 virtualenv lacks) and installed with its declared dependencies from the configured
package index, a local one on these machines. A plain virtualenv, not --system-site-packages: torch
must be absent there, not merely unused, for `import torch` to prove the core does without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
import yaml

from conftest import write_jsonl
from r1distill.cli import app

REPO = Path(__file__).resolve().parents[1]
MISSING_EXTRA = "needs the training extra: pip install 'r1distill[train]'"
# What a checkout may hold beside the sources; none of it belongs in the wheel's build.
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv*", "runs", ".pytest_cache")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _run(*command: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # No PYTHONPATH: `import r1distill` must find the installed wheel, not this checkout.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"} | {"COLUMNS": "200"}
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy named unlike the package: the build must not depend on the checkout's folder name.
    source = tmp_path_factory.mktemp("build") / "checkout"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", source.parent / "dist", source)
    assert built.returncode == 0, built.stdout + built.stderr
    [found] = (source.parent / "dist").glob("r1distill-*.whl")
    return found


@pytest.fixture(scope="module")
def core(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the wheel and the dependencies it declares, no extra: its bin folder."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel, timeout=1200)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv / "bin"


def test_the_wheel_ships_every_subpackage_and_recipe_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    subpackages = {path.parent.relative_to(REPO).as_posix() for path in REPO.glob("*/__init__.py")}
    assert "pipeline" in subpackages
    assert {f"r1distill/{package}/__init__.py" for package in subpackages} <= names
    recipes = {f"r1distill/{path.relative_to(REPO).as_posix()}" for path in REPO.glob("recipes/**/*.yaml")}
    assert "r1distill/recipes/quickstart.yaml" in recipes and recipes <= names
    stray = [name for name in names if name.startswith(("r1distill/tests/", "r1distill/benchmarks/", "r1distill/examples/"))]
    assert stray == [] and "r1distill/setup.py" not in names


def test_every_command_s_help_runs_from_the_installed_wheel(core):
    commands = sorted(typer.main.get_command(app).commands)
    assert {"generate", "filter", "sft", "rl", "eval", "run", "report", "push", "synth"} <= set(commands)
    for args in ([], *([command] for command in commands)):
        result = _run(core / "r1distill", *args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout and "Traceback" not in result.stderr, (args, result.stderr)


def _one_error(result: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a refused command (exit 2, no traceback)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_the_core_runs_without_torch_and_training_names_its_extra(core, tmp_path, fake_server):
    for library in ("torch", "transformers", "trl", "peft", "accelerate"):
        assert _run(core / "python", "-c", f"import {library}").returncode != 0, f"{library} is installed with the core"
    r1distill = core / "r1distill"
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 4)])
    server = ["--backend", "openai", "--base-url", fake_server.url, "--model", "teacher"]

    generated = _run(r1distill, "generate", prompts, "-o", tmp_path / "gen", *server, "-n", "2")
    assert generated.returncode == 0, generated.stderr
    assert len(fake_server.requests) == 6
    filtered = _run(r1distill, "filter", tmp_path / "gen", "-o", tmp_path / "filter", "--check", "format")
    assert filtered.returncode == 0, filtered.stderr
    assert json.loads((tmp_path / "filter" / "stats.json").read_text())
    scored = _run(r1distill, "eval", "--completions", tmp_path / "gen", "-o", tmp_path / "eval")
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]["metrics"]["samples"] == 6
    reported = _run(r1distill, "report", tmp_path / "gen", tmp_path / "filter", tmp_path / "eval", "-o", tmp_path / "report.html")
    assert reported.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000, reported.stderr
    stages = {
        "prompts": {"stage": "synth", "task": "arithmetic", "n": 3, "seed": 1},
        "generate": {"input": "prompts", "model": "t", "backend": "openai", "base-url": fake_server.url, "concurrency": 2},
        "filter": {"input": "generate", "check": ["format"]},
        "report": {"inputs": ["generate", "filter"]},
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output": str(tmp_path / "run"), "stages": stages}, sort_keys=False))
    ran = _run(r1distill, "run", recipe)
    assert ran.returncode == 0 and (tmp_path / "run" / "filter" / "stats.json").is_file(), ran.stderr

    # What needs the training extra says so in one line, before anything is written.
    trained = tmp_path / "trained"
    assert _one_error(_run(r1distill, "sft", tmp_path / "filter", "-o", trained, "--model", "smollm2-135m")) == f"error: sft {MISSING_EXTRA}"
    assert _one_error(_run(r1distill, "rl", prompts, "-o", trained, "--model", "smollm2-135m", "--reward", "accuracy")) == f"error: rl {MISSING_EXTRA}"
    local = _one_error(_run(r1distill, "generate", prompts, "-o", trained, "--model", "smollm2-135m"))
    assert local == f"error: --backend transformers (the default) {MISSING_EXTRA}"
    assert MISSING_EXTRA in _one_error(_run(r1distill, "eval", "--completions", tmp_path / "gen", "-o", trained, "--tokenizer", "smollm2-135m"))
    recipe.write_text(yaml.safe_dump({"output": str(trained), "stages": {**stages, "sft": {"input": "filter", "model": "smollm2-135m"}}}, sort_keys=False))
    assert f"sft {MISSING_EXTRA}" in _one_error(_run(r1distill, "run", recipe))
    assert not trained.exists()
