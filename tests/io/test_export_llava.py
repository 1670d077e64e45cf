"""`mmcurate export RUN_DIR --format llava --out DIR`: LLaVA JSON per split with the cleaned conversations, the kept
images as original bytes (or links), a dataset card; export -> read back gives the same conversations; never
written into the run or its input."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import io_fixtures as fx
from helpers import mmcurate_cli, run_local
from llava_fixtures import build_llava_mix
from mmcurate.export.llava import CARD_SECTIONS, MARKER, export_llava, image_dest, llava_entry, register_card_section
from mmcurate.io import open_reader

STAGES = [{"integrity": {}}, {"conversation_check": {}}, {"conversation_clean": {}}, {"pii_redact": {}}]


def _recipe(path, images, out, stages) -> dict:
    return {
        "input": {"path": str(path), "format": "llava", "options": {"image_root": str(images)}},
        "output": {"path": str(out), "shard_size": 9, "report": False},
        "stages": stages,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A mixed LLaVA set (3 copies with new ids) curated with and without a split step."""
    d = tmp_path_factory.mktemp("export")
    path, entries = build_llava_mix(d / "in", copies=3)
    images = d / "in" / "images"
    run_local(_recipe(path, images, d / "run_split", STAGES + [{"split": {}}]))
    run_local(_recipe(path, images, d / "run", STAGES))
    return d, path, images, entries


def _read_back(json_path, image_root) -> dict[str, dict]:
    return {r["key"]: r for r in fx.read_all(open_reader(json_path, image_root=image_root))}


def _samples(run) -> dict[str, dict]:
    return {s["key"]: s for s in pq.read_table(run / "samples.parquet").to_pylist()}


def test_export_then_read_back_gives_the_same_conversations(runs, tmp_path):
    d, _, images, entries = runs
    run = d / "run_split"
    res = export_llava(run, tmp_path / "exp")
    exp = tmp_path / "exp"
    samples = _samples(run)
    splits = {s["split"] for s in samples.values()}
    assert sorted(res.files) == sorted(f"{s}.json" for s in splits) and res.conversations == len(samples)
    assert sorted(p.name for p in exp.iterdir()) == sorted([*res.files, "README.md", "images", MARKER])
    seen = set()
    for name in res.files:
        back = _read_back(exp / name, exp / "images")
        for key, r in back.items():
            s = samples[key]
            assert f"{s['split']}.json" == name
            assert r["read_reason"] is None
            assert r["turns"] == s["turns"]  # the cleaned, redacted conversation, role for role
            assert r["image_paths"] == s["image_paths"] and r["has_image"] == s["has_image"]
            for p in r["image_paths"]:  # the original bytes
                assert (exp / "images" / p).read_bytes() == (images / p).read_bytes()
            record = json.loads((exp / name).read_text())[list(back).index(key)]
            assert all(c["from"] in ("human", "gpt") for c in record["conversations"])
        seen |= set(back)
    assert seen == set(samples)
    text_only = [k for k, s in samples.items() if not s["has_image"]]
    assert text_only and all("image" not in json.loads(samples[k]["meta"]) for k in text_only)
    assert res.images == len({p for s in samples.values() for p in s["image_paths"]})


def test_user_assistant_roles_are_written_as_llava_spells_them(runs, tmp_path):
    d, *_ = runs
    export_llava(d / "run", tmp_path / "exp")
    data = {e["id"]: e for e in json.loads((tmp_path / "exp" / "data.json").read_text())}
    assert [c["from"] for c in data["text_only_1"]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert data["vqa_mc"]["conversations"][1]["value"] == "B"  # a short answer, kept
    assert "<EMAIL>" in data["with_pii"]["conversations"][0]["value"]
    assert data["sharegpt4v_1"]["conversations"][1]["value"].startswith("The image shows a detailed scene & its café")
    assert data["multi_image"]["image"] == ["coco/astronaut.jpg", "coco/chelsea.jpg"]


def test_link_references_the_originals(runs, tmp_path):
    d, _, images, _ = runs
    export_llava(d / "run", tmp_path / "copy")
    export_llava(d / "run", tmp_path / "link", link=True)
    assert (tmp_path / "copy" / "data.json").read_bytes() == (tmp_path / "link" / "data.json").read_bytes()
    linked = [p for p in (tmp_path / "link" / "images").rglob("*") if not p.is_dir()]
    assert linked and all(p.is_symlink() for p in linked)
    for p in linked:
        rel = p.relative_to(tmp_path / "link" / "images")
        assert os.readlink(p) == os.path.realpath(images / rel)


def test_the_card_says_sources_recipe_counts_and_splits(runs, tmp_path):
    d, path, *_ = runs
    export_llava(d / "run_split", tmp_path / "exp")
    card = (tmp_path / "exp" / "README.md").read_text()
    manifest = json.loads((d / "run_split" / "manifest.json").read_text())
    for text in (
        str(path),
        "conversation_check",
        f"| kept | {manifest['counts']['kept']:,} |",
        "| conversation_check | empty_turn |",
        "| train.json |",
        "## Answers: yes-ratio",
        "add `answer_balance` to the recipe",
        "## Task mix",
    ):
        assert text in card, text

    @register_card_section
    def extra(ctx):
        return f"## Extra\n\n{sum(v['conversations'] for v in ctx.splits.values())} conversations\n"

    try:
        export_llava(d / "run_split", tmp_path / "exp2")
    finally:
        CARD_SECTIONS.remove(extra)
    assert f"## Extra\n\n{manifest['counts']['kept']} conversations" in (tmp_path / "exp2" / "README.md").read_text()


def test_never_into_the_run_or_the_input(runs, tmp_path):
    d, path, images, _ = runs
    run = d / "run"
    for out, what in [
        (run, "is the run directory"),
        (run / "export", "lies inside the run directory"),
        (d, "contains the run directory"),
        (images / "x", "lies inside the input"),
        (path.parent, "contains the input"),
        (path, "is the input"),
    ]:
        with pytest.raises(ValueError, match=what):
            export_llava(run, out)
    before = sorted(p.name for p in run.iterdir())
    proc = mmcurate_cli("export", run, "--format", "llava", "--out", run / "x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "lies inside the run directory" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_an_earlier_export_is_replaced_only_with_overwrite(runs, tmp_path):
    d, *_ = runs
    out = tmp_path / "exp"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(ValueError, match="not empty and holds no earlier export"):
        export_llava(d / "run", out)
    (out / "mine.txt").unlink()
    export_llava(d / "run_split", out)
    (out / "notes.txt").write_text("kept")
    with pytest.raises(ValueError, match="pass --overwrite"):
        export_llava(d / "run", out)
    export_llava(d / "run", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(["data.json", "images", "README.md", MARKER, "notes.txt"])
    assert not list(tmp_path.glob(".exp.export-*"))  # no temporary directory left


def test_cli_export_and_errors(runs, tmp_path):
    d, *_ = runs
    proc = mmcurate_cli("export", d / "run", "--format", "llava", "--out", tmp_path / "exp")
    assert proc.returncode == 0, proc.stderr
    assert "exported" in proc.stdout and "data.json" in proc.stdout
    proc = mmcurate_cli("export", tmp_path / "nothing", "--format", "llava", "--out", tmp_path / "e2")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and proc.stderr.count("\n") == 1
    fake = tmp_path / "plain_run"
    fake.mkdir()
    (fake / "manifest.json").write_text("{}")
    pq.write_table(pa.table({"key": ["a"], "caption": ["x"], "meta": ["{}"]}), fake / "samples.parquet")
    proc = mmcurate_cli("export", fake, "--format", "llava", "--out", tmp_path / "e3")
    assert proc.returncode == 2 and "input.format: llava" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "e3").exists()


def test_entry_and_image_names():
    turns = [{"role": "human", "text": "Q"}, {"role": "gpt", "text": "Yes"}]
    meta = json.dumps(
        {"image": "a.jpg", "conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "Yes"}]}
    )
    assert llava_entry("k", meta, turns) == {
        "id": "k",
        "image": "a.jpg",
        "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "Yes"}],
    }
    assert image_dest("coco/x.jpg") == "coco/x.jpg" and image_dest("a/../b.png") == "b.png"
    for bad in ("/etc/x.jpg", "../up.jpg", ".."):
        dest = image_dest(bad)
        assert dest.startswith("external/") and ".." not in dest.split("/")
