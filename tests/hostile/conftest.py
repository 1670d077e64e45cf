"""Fixtures shared by the hostile-input suites that run whole jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import default_recipe_for, mmcurate_run


@pytest.fixture(scope="module")
def reference(demo_input, tmp_path_factory) -> Path:
    """An uninterrupted run of the test recipe on `demo_input` (tests/conftest.py): what every interrupted or
    refused run is held to."""
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = mmcurate_run(default_recipe_for(demo_input, out))
    assert proc.returncode == 0, proc.stderr
    return out
