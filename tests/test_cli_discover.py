"""Discoverable CLI (issue 14): `mmcurate stages [NAME] [--json]` and `mmcurate recipe list`."""

from __future__ import annotations

import json

import pytest

from mmcurate.cli import main
from mmcurate.pipeline.recipe import RECIPES
from mmcurate.pipeline.stage import registry


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stages_lists_every_stage_with_kind(capsys):
    code, out, _ = _run(capsys, "stages")
    assert code == 0
    headers = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line.startswith(" ")}
    assert set(headers) == set(registry.names())
    for name, kind in [
        ("integrity", "[map]"),
        ("answer_filter", "[map]"),
        ("exact_dedup", "[global]"),
        ("semantic_dedup", "[global]"),
    ]:
        assert headers[name] == kind, (name, headers[name])
    assert "Byte-identical images (sha256)." in out  # a class docstring's first sentence


def test_stages_shows_parameters_and_defaults(capsys):
    code, out, _ = _run(capsys, "stages")
    assert code == 0
    block = out.split("semantic_dedup  [global]")[1].split("\n\n")[0]
    eps = next(line for line in block.splitlines() if line.split()[:1] == ["eps"])
    assert eps.split() == ["eps", "float", "=", "0.05"]
    assert '"hard"' in block  # keep's default
    # a default_factory value is shown
    split_block = out.split("split  [global]")[1].split("\n\n")[0]
    assert "[0.8, 0.1, 0.1]" in split_block


def test_stages_name_shows_one_stage_in_full(capsys):
    code, out, _ = _run(capsys, "stages", "phash_dedup")
    assert code == 0
    assert out.startswith("phash_dedup  [global]")
    assert "max_distance" in out and "connected components" in out  # the whole docstring
    assert out.splitlines()[0] == "phash_dedup  [global]"
    assert "exact_dedup  [" not in out  # one stage only


def test_stages_unknown_name_is_one_line_error(capsys):
    code, out, err = _run(capsys, "stages", "semantik_dedup")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmcurate: error: "), err
    assert "semantik_dedup" in lines[0] and "semantic_dedup" in lines[0] and "integrity" in lines[0]


def test_stages_json(capsys):
    code, out, _ = _run(capsys, "stages", "--json")
    assert code == 0
    data = json.loads(out)
    by_name = {s["name"]: s for s in data}
    assert sorted(by_name) == registry.names()
    sd = by_name["semantic_dedup"]
    assert sd["kind"] == "global"
    eps = next(p for p in sd["params"] if p["name"] == "eps")
    assert eps == {"name": "eps", "type": "float", "default": 0.05, "required": False}
    assert by_name["integrity"]["kind"] == "map"

    code, out, _ = _run(capsys, "stages", "exact_dedup", "--json")
    assert code == 0
    one = json.loads(out)
    assert one["name"] == "exact_dedup" and one["kind"] == "global" and one["summary"]


def test_recipe_list(capsys):
    code, out, _ = _run(capsys, "recipe", "list")
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert set(lines) == {"default", "cogvlm", "datacomp-clip", "semantic", "llava"}
    assert lines["default"].startswith("mmcurate default recipe")
    assert "LLaVA" in lines["llava"] and "DataComp" in lines["datacomp-clip"] and "CogVLM" in lines["cogvlm"]


@pytest.mark.parametrize("name", ["default", "cogvlm", "datacomp-clip", "semantic", "llava"])
def test_recipe_templates_print_and_parse(capsys, name):
    """Each template prints as it is stored and is a valid recipe (every stage and parameter checked)."""
    import yaml

    from mmcurate.pipeline.recipe import parse_recipe

    code, out, _ = _run(capsys, "recipe", name)
    assert code == 0
    assert out == RECIPES[name]
    recipe = parse_recipe(yaml.safe_load(out))
    assert recipe.stages and recipe.input_format in ("auto", "llava")
