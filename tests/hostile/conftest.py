"""Fixtures shared by the hostile-input suites that run whole jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.builders_runs import build_input, recipe, run


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo dataset as input, built once per test module."""
    return build_input(tmp_path_factory.mktemp("input") / "in")


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory) -> Path:
    """An uninterrupted run of the test recipe on `demo`: what every interrupted or refused run is held to."""
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = run(recipe(demo, out))
    assert proc.returncode == 0, proc.stderr
    return out
