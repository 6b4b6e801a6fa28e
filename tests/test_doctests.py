"""The examples in the docstrings of every ``hf_select`` module run and give what they show.

``# doctest: +SKIP`` is kept for the few examples that need a real model, a file or the network.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hf_select

MODULES = sorted(m.name for m in pkgutil.walk_packages(hf_select.__path__, prefix="hf_select."))


def test_every_module_is_listed():
    assert {"hf_select.scoring.ifd", "hf_select.scoring.batching", "hf_select.stages"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name)  # raises on a malformed example (e.g. an unknown doctest option)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples in {name} failed (see above)"
