"""The examples in docstrings run in the suite, so they stay true: one case per module that has some.

A module listed here must hold at least one example (a case that runs nothing would pass whatever the
code does), and every module of the package that holds examples must be listed (new examples run).

    PYTHONPATH=.. python -m pytest -q tests/test_doctests.py
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re

import pytest

import r1distill
from r1distill.errors import TRAINING_LIBRARIES

WITH_EXAMPLES = [
    "r1distill.backends",
    "r1distill.backends.hf",
    "r1distill.backends.openai_compat",
    "r1distill.backends.vllm_offline",
    "r1distill.console",
    "r1distill.data",
    "r1distill.distill.data",
    "r1distill.errors",
    "r1distill.eval.benchmarks",
    "r1distill.eval.metrics",
    "r1distill.eval.record",
    "r1distill.files",
    "r1distill.filter.decontaminate",
    "r1distill.filter.dedup",
    "r1distill.generate.budget",
    "r1distill.generate.config",
    "r1distill.generate.failures",
    "r1distill.prompts",
    "r1distill.generate.run",
    "r1distill.redact",
    "r1distill.report.plots",
    "r1distill.report.sections",
    "r1distill.rewards",
    "r1distill.rewards.accuracy",
    "r1distill.rewards.code",
    "r1distill.rewards.judge",
    "r1distill.rewards.rules",
    "r1distill.rewards.tasks",
    "r1distill.rewards.text",
    "r1distill.rewards.verify",
    "r1distill.rl.config",
    "r1distill.schema",
    "r1distill.training.card",
    "r1distill.training.recipe",
]

# setup.py lies in the package's folder but is the build's script, not a module of the package.
MODULES = sorted(info.name for info in pkgutil.walk_packages(r1distill.__path__, "r1distill.") if info.name != "r1distill.setup")


def _load(module: str):
    """The module, or a skip where it needs the training extra that this environment lacks (the core on 3.10)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in TRAINING_LIBRARIES:
            raise
        pytest.skip(f"{module} imports {err.name}: needs the training extra")


def _examples(module: str) -> int:
    return sum(len(test.examples) for test in doctest.DocTestFinder().find(_load(module)))


def _needs_missing(test: doctest.DocTest) -> list[str]:
    """The training libraries that `test`'s examples import and this environment lacks (the core on 3.10)."""
    sources = [example.source for example in test.examples]
    return [
        library
        for library in TRAINING_LIBRARIES
        if any(re.match(rf"(import|from) {library}\b", source) for source in sources) and importlib.util.find_spec(library) is None
    ]


@pytest.mark.parametrize("module", WITH_EXAMPLES)
def test_doctests(module):
    runner = doctest.DocTestRunner()
    tests = [test for test in doctest.DocTestFinder().find(_load(module)) if test.examples]
    runnable = [test for test in tests if not _needs_missing(test)]
    if not runnable:
        pytest.skip(f"{module}'s examples import {', '.join(_needs_missing(tests[0]))}: needs the training extra")
    for test in runnable:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{module} has no examples: drop it from WITH_EXAMPLES"
    assert result.failed == 0


def test_every_module_with_examples_is_listed():
    assert set(WITH_EXAMPLES) <= set(MODULES), "a listed module no longer exists"
    assert [module for module in MODULES if _examples(module)] == sorted(WITH_EXAMPLES)
