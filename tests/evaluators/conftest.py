"""The JavaScript flagd evaluator, installed once per machine and package lock (tests/support/jsevaluator.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.jsevaluator import install, installed_version


@pytest.fixture(scope="session")
def javascript() -> Path:
    directory = install()
    assert installed_version(directory, "@openfeature/flagd-core") == "4.0.1"
    return directory
