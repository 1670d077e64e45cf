"""Fast iteration: a run over an earlier run's output (`--from RUN`, input.format mmcurate) reuses the columns that
run stored when they were computed the same way (pipeline.reuse), `--limit N`, and `mmcurate validate`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import default_recipe_for, mmcurate_cli, run_local, write_recipe
from mmcurate.io import open_reader
from mmcurate.pipeline.map_phase import StagePlan
from mmcurate.pipeline.recipe import parse_recipe
from mmcurate.pipeline.reuse import plan_reuse


@pytest.fixture(scope="module")
def first_run(demo_input, tmp_path_factory) -> Path:
    """The default recipe over the demo input, with phash_dedup at radius 0 (so near-duplicates stay for the
    reruns to remove)."""
    out = tmp_path_factory.mktemp("reuse") / "first"
    r = default_recipe_for(demo_input, out)
    r["stages"] = [s if "phash_dedup" not in s else {"phash_dedup": {"max_distance": 0}} for s in r["stages"]]
    run_local(r)
    return out


def _rerun(first: Path, out: Path, edit=None, **recipe_kw) -> dict:
    r = default_recipe_for(first, out)
    r["input"]["format"] = "mmcurate"
    if edit:
        edit(r)
    return run_local(r, **recipe_kw)


def _stage(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["stages"] if s["name"] == name)


def _samples(out: Path):
    return pq.read_table(out / "samples.parquet")


def test_a_run_records_the_fingerprints_of_its_stored_columns(first_run):
    m = json.loads((first_run / "manifest.json").read_text())
    cols = m["columns"]
    quality = {"sharpness", "brightness", "contrast", "colourfulness", "border_fraction", "flat_fraction", "entropy"}
    assert set(cols) == {"width", "height", "format", "file_size", "phash", "sha256", "low_information", *quality}
    assert cols["phash"] == {"fingerprint": {"fn": "phash", "exact": False}, "from": "integrity"}
    assert cols["sha256"]["from"] == "exact_dedup.map"
    assert not any(s.get("reused") for s in m["stages"])  # nothing came from an earlier run


def test_run_reader_gives_back_the_kept_samples_with_their_stored_columns(first_run):
    reader = open_reader(first_run)
    assert reader.format == "mmcurate"
    rows = [r for s in reader.shards() for b in reader.read(s) for r in b.to_pylist()]
    stored = _samples(first_run).to_pylist()
    assert [r["key"] for r in rows] == [r["key"] for r in stored]
    for got, want in zip(rows, stored):
        assert got["phash"] == int(want["phash"], 16)  # stored as hex text, read back as the uint64 it was
        assert got["sha256"] == want["sha256"] and got["width"] == want["width"]
        assert got["caption"] == want["caption"] and got["meta"] == want["meta"]
        assert got["image"] is not None
    assert "split" not in reader.schema.names and "caption_original" not in reader.schema.names


def test_a_stricter_threshold_reuses_the_stored_hashes_and_gives_what_recomputing_gives(first_run, tmp_path):
    def stricter(r):
        r["stages"] = [s if "phash_dedup" not in s else {"phash_dedup": {"max_distance": 8}} for s in r["stages"]]

    reused = _rerun(first_run, tmp_path / "reused", stricter)
    for name in ("integrity", "exact_dedup.map", "phash_dedup.map"):
        assert _stage(reused, name).get("reused") == _stage(reused, name)["in"] > 0, name
    assert (
        reused["counts"]["accounting_ok"]
        and reused["counts"]["read"] == pq.read_metadata(first_run / "samples.parquet").num_rows
    )
    assert _stage(reused, "phash_dedup")["rejected"] > 0  # radius 8 finds what radius 0 left

    # The same recipe over the same samples read as plain WebDataset shards computes everything again.
    def plain(r):
        stricter(r)
        r["input"] = {"path": str(first_run / "shards"), "format": "webdataset"}

    computed = _rerun(first_run, tmp_path / "computed", plain)
    assert not any(s.get("reused") for s in computed["stages"])
    a, b = _samples(tmp_path / "reused"), _samples(tmp_path / "computed")
    assert a.column("key").to_pylist() == b.column("key").to_pylist()
    for c in ("phash", "sha256", "width", "height", "format", "file_size"):
        assert a.column(c).to_pylist() == b.column(c).to_pylist(), c
    assert json.loads((tmp_path / "reused" / "manifest.json").read_text())["columns"]["phash"]["from"] == "input"


def test_other_parameters_recompute_and_replace_the_stored_column(first_run, tmp_path):
    def exact(r):
        r["stages"] = [s if "phash_dedup" not in s else {"phash_dedup": {"mode": "exact"}} for s in r["stages"]]

    m = _rerun(first_run, tmp_path / "exact", exact)
    assert _stage(m, "integrity").get("reused") == _stage(m, "integrity")["in"]
    assert not _stage(m, "phash_dedup.map").get("reused")
    cols = json.loads((tmp_path / "exact" / "manifest.json").read_text())["columns"]
    assert cols["phash"] == {"fingerprint": {"fn": "phash", "exact": True}, "from": "phash_dedup.map"}
    out = _samples(tmp_path / "exact")
    stored = dict(zip(*[_samples(first_run).column(c).to_pylist() for c in ("key", "phash")]))
    changed = [k for k, h in zip(out.column("key").to_pylist(), out.column("phash").to_pylist()) if h != stored[k]]
    assert changed  # exact-mode hashes, not the stored fast ones


def test_a_stored_fingerprint_that_differs_is_not_trusted(first_run, tmp_path):
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(first_run, tampered)
    m = json.loads((tampered / "manifest.json").read_text())
    m["columns"]["sha256"]["fingerprint"] = {"fn": "sha256", "version": "other"}
    (tampered / "manifest.json").write_text(json.dumps(m))
    rerun = _rerun(tampered, tmp_path / "out")
    assert not _stage(rerun, "exact_dedup.map").get("reused")
    assert _stage(rerun, "integrity").get("reused") == _stage(rerun, "integrity")["in"]


def test_integrity_applies_its_pixel_limit_to_stored_sizes(first_run, tmp_path):
    sizes = _samples(first_run)
    area = np.array(sizes.column("width").to_pylist()) * np.array(sizes.column("height").to_pylist())
    limit = int(np.median(area))

    def small(r):
        r["stages"][0] = {"integrity": {"max_pixels": limit}}

    m = _rerun(first_run, tmp_path / "small", small)
    st = _stage(m, "integrity")
    assert st.get("reused") == st["in"]
    assert st["rejected"] == int((area > limit).sum()) > 0 and set(st["reasons"]) == {"too_large"}


def test_plan_reuse_drops_stale_columns_before_computing():
    recipe = parse_recipe(default_recipe_for("x", Path("y")))
    steps = StagePlan.from_stages(recipe.build_stages()).map_steps
    stored = {"phash": {"fn": "phash", "exact": True}, "sha256": {"fn": "sha256"}}
    plan = plan_reuse(steps, stored)
    by_name = dict(plan.steps)
    assert getattr(by_name["integrity"], "stale", ()) == ("phash",)  # its fast pHash replaces the exact one
    assert plan.reused == ["exact_dedup.map"]
    assert plan.columns["phash"]["from"] == "integrity"


def test_cli_from_limit_and_validate(first_run, demo_input, tmp_path):
    r = default_recipe_for(demo_input, tmp_path / "unused")
    path = write_recipe(r, tmp_path / "r.yaml")
    proc = mmcurate_cli("run", path, "--from", first_run, "--output", tmp_path / "from")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "from" / "manifest.json").read_text())
    assert m["run"]["recipe"]["input"] == {"path": str(first_run), "format": "mmcurate", "options": {}}

    proc = mmcurate_cli("run", path, "--limit", 7, "--output", tmp_path / "lim")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "lim" / "manifest.json").read_text())
    assert m["counts"]["read"] == 7 and m["run"]["recipe"]["run"]["limit"] == 7
    assert len(m["inputs"]) == 1  # the shards after the 7th sample are not read

    proc = mmcurate_cli("run", path, "--input", demo_input, "--from", first_run)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr

    ok = mmcurate_cli("validate", path)
    assert ok.returncode == 0 and "ready to run" in ok.stdout, ok.stdout + ok.stderr
    assert "decodes" in ok.stdout and "webdataset" in ok.stdout
    bad = mmcurate_cli("validate", path, "--input", tmp_path / "nowhere")
    assert bad.returncode == 2 and "FAIL  input" in bad.stdout


def test_validate_flags_random_weights(demo_input, tmp_path):
    r = default_recipe_for(demo_input, tmp_path / "o")
    r["stages"].append({"clip_embed": {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}})
    proc = mmcurate_cli("validate", write_recipe(r, tmp_path / "r.yaml"))
    assert proc.returncode == 2 and "random" in proc.stdout, proc.stdout + proc.stderr


def test_limit_cuts_shards_of_unknown_size(demo_input, tmp_path):
    from mmcurate.pipeline.input import open_input

    r = parse_recipe(copy.deepcopy(default_recipe_for(demo_input, tmp_path / "o")), limit=30)
    reader = open_input(r)
    got = [b.num_rows for s in reader.shards() for b in reader.read(s, batch_size=8)]
    assert sum(got) == 30 and sum(reader.count(s) for s in reader.shards()) == 30


TINY = {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}


def test_clip_embeddings_are_reused_for_the_same_model_and_text(first_run, tmp_path):
    def with_clip(threshold=None, **clean):
        def edit(r):
            r["stages"] = [s if "caption_clean" not in s else {"caption_clean": clean} for s in r["stages"]]
            r["stages"].append({"clip_embed": dict(TINY)})
            if threshold is not None:
                r["stages"].append({"clip_score_filter": {"threshold": threshold}})

        return edit

    embedded = _rerun(first_run, tmp_path / "embedded", with_clip())
    assert not _stage(embedded, "clip_embed").get("reused")
    scores = _samples(tmp_path / "embedded").column("clip_score").to_pylist()
    cut = float(np.median(scores))

    strict = _rerun(tmp_path / "embedded", tmp_path / "strict", with_clip(cut))
    assert _stage(strict, "clip_embed").get("reused") == _stage(strict, "clip_embed")["in"] > 0
    kept = _samples(tmp_path / "strict")
    assert kept.num_rows == sum(s >= cut for s in scores) and min(kept.column("clip_score").to_pylist()) >= cut
    cols = json.loads((tmp_path / "strict" / "manifest.json").read_text())["columns"]
    assert cols["image_embedding"]["from"] == "input" and cols["clip_score"]["fingerprint"]["fn"] == "clip_text"

    # Lower-cased captions are other texts: the rows are embedded again, and their scores are those of a fresh run
    # (the same as before here: open_clip's tokenizer lower-cases anyway; the digests tell the texts apart).
    lower = _rerun(tmp_path / "embedded", tmp_path / "lower", with_clip(None, lowercase=True))
    assert not _stage(lower, "clip_embed").get("reused")
    _rerun(first_run, tmp_path / "fresh", with_clip(None, lowercase=True))
    a, b = _samples(tmp_path / "lower"), _samples(tmp_path / "fresh")
    assert a.column("clip_text_digest").to_pylist() == b.column("clip_text_digest").to_pylist()
    assert np.allclose(a.column("clip_score").to_pylist(), b.column("clip_score").to_pylist(), atol=1e-5)
    assert (
        a.column("clip_text_digest").to_pylist()
        != _samples(tmp_path / "embedded").column("clip_text_digest").to_pylist()
    )

    # Another seed of random weights is another model.
    def other_seed(r):
        with_clip()(r)
        r["stages"][-1]["clip_embed"]["seed"] = 1

    assert not _stage(_rerun(tmp_path / "embedded", tmp_path / "seed1", other_seed), "clip_embed").get("reused")


def test_validate_fails_on_missing_captions_only_when_the_recipe_filters_them(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 300), (40 * i, 90, 200)).save(folder / f"{i}.jpg")
    r = default_recipe_for(folder, tmp_path / "o")
    proc = mmcurate_cli("validate", write_recipe(r, tmp_path / "r.yaml"))
    assert proc.returncode == 2 and "but no captions" in proc.stdout and "FAIL  captions" in proc.stdout
    r["stages"] = [s for s in r["stages"] if "caption_filter" not in s]
    proc = mmcurate_cli("validate", write_recipe(r, tmp_path / "r2.yaml"))
    assert proc.returncode == 0 and "but no captions" in proc.stdout, proc.stdout
