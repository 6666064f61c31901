"""The runnable examples in the pure cores' docstrings run, and say what they print.

river's convention, kept here: a module's docstring shows the maths and a small example. An
example that has rotted misleads more than none, so each one is run as a test.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
WITH_EXAMPLES = sorted(
    "streamrec.models." + ".".join(path.relative_to(MODELS).with_suffix("").parts).removesuffix(".__init__")
    for path in MODELS.rglob("*.py")
    if ">>> " in path.read_text()
)


def test_there_are_examples_to_run():
    assert "streamrec.models.recommender.sampling" in WITH_EXAMPLES
    assert "streamrec.models.augmentation.expansion" in WITH_EXAMPLES


@pytest.mark.parametrize("module", WITH_EXAMPLES)
def test_docstring_examples(module: str):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{module}: {result.failed} of {result.attempted} failed"
