"""Every module's doctests run in the suite, so the examples in docstrings stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import r1distill

from r1distill.errors import TRAINING_LIBRARIES

# setup.py lies in the package's folder but is the build's script, not a module of the package.
MODULES = sorted(info.name for info in pkgutil.walk_packages(r1distill.__path__, "r1distill.") if info.name != "r1distill.setup")


def test_the_package_has_modules_with_doctests():
    assert {"r1distill.schema", "r1distill.rewards", "r1distill.backends", "r1distill.rewards.verify"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in TRAINING_LIBRARIES:
            raise
        pytest.skip(f"{module} imports {err.name}: needs the training extra")
    result = doctest.testmod(loaded)
    assert result.failed == 0
