"""Stages import the foundation and the shared packages, never each other's internals.

A stage that reaches into another's modules breaks when that one is reorganised, and hides what the
two share; what several stages need lives in a shared module (prompts.py, outputs.py, suites.py) or
package (backends/, rewards/, training/). Two exceptions are the design: eval generates through
generate, and the runner (pipeline/) runs every stage. The registry (stages.py) and the CLI list every
stage's settings. Read from the source, function-level imports included.

    PYTHONPATH=.. python -m pytest -q tests/test_boundaries.py
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "filter", "distill", "rl", "eval", "report", "pipeline", "synth")
SHARED = ("backends", "rewards", "training")
# Who may import which other stage: the design's two exceptions.
ALLOWED = {"eval": {"generate"}, "pipeline": set(STAGES)}
# Modules that list every stage by design.
EVERY_STAGE = ("stages.py", "cli.py")


def _imports(path: Path) -> set[str]:
    """The r1distill top-level parts (a stage folder, a shared package, a module) `path` imports."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        parts |= {name.split(".")[1] for name in names if name.startswith("r1distill.") and name.count(".") >= 1}
    return parts


def _modules() -> list[Path]:
    return [path for path in REPO.rglob("*.py") if path.relative_to(REPO).parts[0] not in ("tests", "benchmarks", "examples", "recipes", "docs")]


def test_stages_import_no_other_stage_except_by_design():
    crossing = []
    for path in _modules():
        owner = path.relative_to(REPO).parts[0]
        if owner not in STAGES:
            continue
        for part in _imports(path) & set(STAGES) - {owner} - ALLOWED.get(owner, set()):
            crossing.append(f"{path.relative_to(REPO)} imports r1distill.{part}")
    assert crossing == []


def test_the_foundation_and_the_shared_packages_import_no_stage():
    crossing = []
    for path in _modules():
        where = path.relative_to(REPO)
        if where.parts[0] in STAGES or where.name in EVERY_STAGE and len(where.parts) == 1 or where.name == "setup.py":
            continue
        for part in _imports(path) & set(STAGES):
            crossing.append(f"{where} imports r1distill.{part}")
    assert crossing == []


def test_the_check_reads_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from r1distill.generate.store import read_rows\n    import r1distill.rl.run\n")
    assert _imports(module) == {"generate", "rl"}
