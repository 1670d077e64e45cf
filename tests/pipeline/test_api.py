"""mmcurate.run: the Python entry point runs a recipe as the CLI does, the report included."""

import json

import pytest

import mmcurate
from helpers import default_recipe_for, write_recipe
from mmcurate.pipeline.stage import StageError


@pytest.mark.parametrize("form", ["dict", "path"])
def test_run_writes_outputs_and_the_report(demo_input, tmp_path, form):
    out = tmp_path / "out"
    recipe = default_recipe_for(demo_input, out)
    recipe["output"]["report"] = True
    given = recipe if form == "dict" else write_recipe(recipe, tmp_path / "recipe.yaml")
    manifest = mmcurate.run(given, progress=False)
    assert manifest["counts"]["accounting_ok"]
    assert (out / "report.html").exists() and (out / "thumbs.parquet").exists()
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_run_without_the_report_and_bad_arguments(demo_input, tmp_path):
    out = tmp_path / "out"
    recipe = default_recipe_for(demo_input, out)
    recipe["output"]["report"] = True
    mmcurate.run(recipe, progress=False, report=False)
    assert (out / "samples.parquet").exists() and not (out / "thumbs.parquet").exists()
    assert not (out / "report.html").exists()
    with pytest.raises(StageError, match="executor"):
        mmcurate.run(recipe, executor="spark")
    with pytest.raises(StageError, match="recipe must be"):
        mmcurate.run(42)


def test_in_memory_api_is_exported_lazily():
    """mmcurate.curate_table / Pipeline / CurateResult load mmcurate.api on first use, without torch; the name
    survives the import of the mmcurate.curate subpackage (why it is not called `curate`)."""
    import subprocess
    import sys

    code = (
        "import sys, mmcurate; light = 'mmcurate.api' not in sys.modules; import mmcurate.curate.dedup; "
        "from mmcurate.api import curate_table; "
        "print(light, mmcurate.curate_table is curate_table, mmcurate.Pipeline.__module__, "
        "mmcurate.CurateResult.__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "mmcurate.api", "CurateResult", "False"]
    assert {"curate_table", "Pipeline", "CurateResult", "run"} <= set(mmcurate.__all__)
