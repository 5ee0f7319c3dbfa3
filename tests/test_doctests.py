"""Every module's doctests run in the suite, so the examples in docstrings stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import r1distill

MODULES = sorted(info.name for info in pkgutil.walk_packages(r1distill.__path__, "r1distill."))


def test_the_package_has_modules_with_doctests():
    assert {"r1distill.schema", "r1distill.rewards", "r1distill.backends", "r1distill.rewards.verify"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
