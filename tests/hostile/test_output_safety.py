"""The output directory never costs the user data: never the input, never a directory mmcurate did not write,
never a finished run of another recipe, never trusted blindly on resume; a failed start leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmcurate.pipeline.output_dir import OutputInUse, RunLock
from tests.helpers import default_recipe_for, mmcurate_run
from tests.hostile.builders_runs import error_lines, folder_input, llava_input, snapshot, tree
from tests.io_fixtures import img2dataset_shards


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("mmcurate: error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Output apart from the input
# ---------------------------------------------------------------------------------------------------------------
def _layout(kind: str, base: Path):
    """(input spec, output dir, recipe options, the tree that must stay untouched)."""
    src = base / "data"
    if kind in ("same", "inside", "parent", "symlink", "glob", "braces"):
        src.mkdir()
        img2dataset_shards(src, 2, 3)
        spec = {"glob": str(src / "*.tar"), "braces": str(src / "{00000..00001}.tar")}.get(kind, src)
        out = {"same": src, "inside": src / "curated", "parent": base, "glob": src, "braces": src}.get(kind)
        if kind == "symlink":
            out = base / "link"
            out.symlink_to(src)
        return spec, out, {}, base
    if kind == "llava_image_root":
        path = llava_input(src)
        return path, src / "images" / "curated", {}, base
    if kind == "folder_root":
        folder_input(src)
        return src, src / "curated", {"format": "folder"}, base
    raise ValueError(kind)


@pytest.mark.parametrize("flags", [(), ("--overwrite",), ("--resume",)], ids=["plain", "overwrite", "resume"])
@pytest.mark.parametrize(
    "kind", ["same", "inside", "parent", "symlink", "glob", "braces", "llava_image_root", "folder_root"]
)
def test_output_overlapping_the_input_is_refused(tmp_path, kind, flags):
    spec, out, opts, guarded = _layout(kind, tmp_path)
    r = default_recipe_for(spec, out)
    r["input"].update(opts)
    yaml_dir = tmp_path.parent / (tmp_path.name + "_recipes")
    yaml_dir.mkdir(exist_ok=True)
    before = snapshot(guarded)
    proc = mmcurate_run(r, *flags, tmp=yaml_dir)
    _refused(proc, "outside the input")
    assert snapshot(guarded) == before, "the input (or a folder holding it) was changed"


# ---------------------------------------------------------------------------------------------------------------
# --overwrite deletes only what mmcurate wrote
# ---------------------------------------------------------------------------------------------------------------
def test_overwrite_refuses_a_directory_mmcurate_did_not_write(demo_input, tmp_path):
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "thesis.txt").write_text("years of work")
    (out / "shards").mkdir()  # a name we use is not proof the directory is ours
    before = snapshot(out)
    _refused(
        mmcurate_run(default_recipe_for(demo_input, out), "--overwrite", tmp=tmp_path), "--overwrite will not delete it"
    )
    assert snapshot(out) == before


def test_overwrite_replaces_our_outputs_and_keeps_the_rest(demo_input, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "shards" / "99999.tar").write_bytes(b"an output shard of an older, bigger run")
    (out / "README.txt").write_text("what this folder is")
    r = default_recipe_for(demo_input, out)
    proc = mmcurate_run(r, "--overwrite", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "README.txt").read_text() == "what this folder is"
    assert "kept 1 entry mmcurate did not write" in proc.stderr and "README.txt" in proc.stderr
    assert tree(out, skip={"manifest.json", "report.html", "README.txt"}) == tree(reference)


def test_overwrite_of_an_empty_directory_runs(demo_input, reference, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert mmcurate_run(default_recipe_for(demo_input, out), "--overwrite", tmp=tmp_path).returncode == 0
    assert tree(out) == tree(reference)


# ---------------------------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------------------------
def test_run_lock_is_exclusive_and_names_the_holder(tmp_path):
    out = tmp_path / "out"
    first = RunLock(out).acquire()
    try:
        with pytest.raises(OutputInUse, match=rf"in use by pid {os.getpid()} on host \S+ \(started \d{{4}}-"):
            RunLock(out).acquire()
    finally:
        first.release(cleanup=True)
    assert not out.exists(), "a lock taken on a new output and released unused leaves nothing"
    again = RunLock(out).acquire()  # released: free again
    again.release()


def test_lock_follows_the_file_not_a_deleted_one(tmp_path):
    """The end of a run deletes _work/ (and its lock file) while still holding the lock: a process that opened
    the old file must not take a lock on it and think it holds the output."""
    out = tmp_path / "out"
    first = RunLock(out).acquire()
    fd = os.open(first.path, os.O_RDWR)  # a second process got this far before the delete
    shutil.rmtree(out / "_work")
    first.release()
    os.close(fd)
    second = RunLock(out).acquire()
    try:
        assert os.path.samestat(os.fstat(second.fd), os.stat(out / "_work" / "lock"))
        with pytest.raises(OutputInUse):
            RunLock(out).acquire()
    finally:
        second.release(cleanup=True)


# ---------------------------------------------------------------------------------------------------------------
# --resume of a finished run
# ---------------------------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_of_another_recipe_is_refused(demo_input, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = snapshot(out)
    r = default_recipe_for(demo_input, out)
    r["stages"] = [s for s in r["stages"] if "phash_dedup" not in s]
    _refused(mmcurate_run(r, "--resume", tmp=tmp_path), "finished run of a different recipe", "--overwrite")
    assert snapshot(out) == before


def test_resume_of_a_finished_run_of_the_same_recipe_changes_nothing(demo_input, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = snapshot(out)
    proc = mmcurate_run(default_recipe_for(demo_input, out), "--resume", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "already holds a finished run" in proc.stderr and "read 111" in proc.stdout
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------------------------
# A failed start leaves nothing
# ---------------------------------------------------------------------------------------------------------------
def _bad(kind: str, demo: Path, out: Path, tmp: Path) -> dict:
    r = default_recipe_for(demo, out)
    if kind == "wrong_input":
        r["input"]["path"] = str(tmp / "no_such_dir")
    elif kind == "missing_captions":
        r["input"]["path"] = str(folder_input(tmp / "imgs"))
        r["input"]["format"] = "folder"
        r["input"]["options"] = {"captions": str(tmp / "no_such_captions.jsonl")}
    elif kind == "bad_reader_option":
        r["input"]["options"] = {"caption_extension": "txt"}
    elif kind == "bad_stage_param":
        r["stages"][1] = {"image_filter": {"min_sde": 3}}
    elif kind == "missing_head_weights":
        r["stages"].insert(1, {"clip_embed": {"model": "mmcurate-tiny", "weights": "random"}})
        r["stages"].insert(2, {"clip_heads": {"nsfw_weights": str(tmp / "no_such_head.pth")}})
    elif kind == "missing_clip_weights":
        r["stages"].insert(1, {"clip_embed": {"model": "mmcurate-tiny", "weights": str(tmp / "none.safetensors")}})
    return r


@pytest.mark.parametrize("existing", [False, True], ids=["new_out", "empty_out"])
@pytest.mark.parametrize(
    "kind",
    [
        "wrong_input",
        "missing_captions",
        "bad_reader_option",
        "bad_stage_param",
        "missing_head_weights",
        "missing_clip_weights",
    ],
)
def test_failed_start_writes_nothing(demo_input, tmp_path, kind, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    _refused(mmcurate_run(_bad(kind, demo_input, out, tmp_path), tmp=tmp_path))
    assert sorted(os.listdir(out)) == [] if existing else not out.exists(), (
        f"the failed start left {sorted(os.listdir(out))}"
    )


def test_corrected_rerun_needs_no_overwrite(demo_input, reference, tmp_path):
    out = tmp_path / "out"
    _refused(mmcurate_run(_bad("wrong_input", demo_input, out, tmp_path), tmp=tmp_path), "does not exist")
    proc = mmcurate_run(default_recipe_for(demo_input, out), tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert tree(out) == tree(reference)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["accounting_ok"]


def test_set_up_failure_in_the_map_phase_leaves_nothing(demo_input, reference, tmp_path):
    """A weight file that exists passes the pre-flight; its load fails in the map phase, before any result:
    that run leaves nothing either, and the corrected recipe runs without --overwrite."""
    out = tmp_path / "out"
    (tmp_path / "head.pth").write_bytes(b"not a state dict")
    r = default_recipe_for(demo_input, out)
    r["stages"].insert(1, {"clip_embed": {"model": "mmcurate-tiny", "weights": "random"}})
    r["stages"].insert(2, {"clip_heads": {"nsfw_weights": str(tmp_path / "head.pth")}})
    _refused(mmcurate_run(r, tmp=tmp_path), "nsfw_weights")
    assert not out.exists()
    assert mmcurate_run(default_recipe_for(demo_input, out), tmp=tmp_path).returncode == 0
    assert tree(out) == tree(reference)
