"""Errors a person can act on: every input, recipe, weight-file and set-up error is one line
`mmcurate: error: ...` with exit code 2 and no traceback (--debug shows it); a damaged shard is curated up to the
damage with a warning (or stops the run with run.on_shard_error: fail); a reason that rejects most of a run ends
with a warning naming the setting that usually fixes it."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import mmcurate_cli
from tests.hostile.builders_runs import error_lines
from tests.io_fixtures import image_bytes, img2dataset_shards


def _recipe_file(tmp: Path, input_path, stages=None, options=None, fmt="auto", run=None) -> Path:
    """tmp/recipe.yaml: a small recipe (integrity and exact dedup by default) reading input_path."""
    r = {
        "input": {"path": str(input_path), "format": fmt, "options": options or {}},
        "output": {"path": str(tmp / "out"), "shard_size": 50},
        "run": run or {},
        "stages": stages or [{"integrity": {}}, {"exact_dedup": {}}],
    }
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str):
    lines = error_lines(proc)  # the progress lines of a run that got going are log records, not the error
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("mmcurate: error: "), proc.stderr
    err = lines[0]
    for n in needles:
        assert n in err, err


@pytest.fixture()
def shards(tmp_path) -> Path:
    d = tmp_path / "shards"
    img2dataset_shards(d, n_shards=4, per_shard=10)
    return d


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _coco(tmp: Path) -> Path:
    """COCO *detection* annotations (instances_*.json): no captions, refused naming the file (captions_*.json is
    read: tests/io/test_inputs_coco.py)."""
    p = tmp / "instances_train2017.json"
    p.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"image_id": 1, "id": 5, "bbox": [0, 0, 4, 4], "category_id": 17}],
                "categories": [{"id": 17, "name": "cat"}],
            }
        )
    )
    return p


CASES = {
    "missing recipe": lambda t, s: (["run", t / "nope.yaml"], ["recipe file not found"]),
    "invalid YAML": lambda t, s: (["run", _write(t / "r.yaml", "stages: [\n  - {integrity")], ["not valid YAML"]),
    "unknown stage parameter": lambda t, s: (
        ["run", _recipe_file(t, s, stages=[{"integrity": {"max_pixel": 3}}])],
        ["max_pixel"],
    ),
    "bad reader option": lambda t, s: (["run", _recipe_file(t, s, options={"captoins": "x.csv"})], ["captoins"]),
    "unknown input format": lambda t, s: (["run", _recipe_file(t, s, fmt="parquetz")], ["parquetz"]),
    "input path missing": lambda t, s: (["run", _recipe_file(t, t / "missing_dir")], ["missing_dir"]),
    "COCO instances JSON": lambda t, s: (["run", _recipe_file(t, _coco(t))], ["instances_train2017.json"]),
    "bad on_shard_error": lambda t, s: (
        ["run", _recipe_file(t, s, run={"on_shard_error": "ignore"})],
        ["on_shard_error"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_and_recipe_errors_are_one_actionable_line(case, tmp_path, shards):
    args, needles = CASES[case](tmp_path, shards)
    proc = mmcurate_cli(*args, cwd=tmp_path)
    _assert_one_line_error(proc, *needles)


def test_debug_shows_the_traceback(tmp_path, shards):
    proc = mmcurate_cli("run", _recipe_file(tmp_path, shards, options={"captoins": "x"}), "--debug", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_error_line_classifies_failures():
    from mmcurate.cli import error_line

    code, line = error_line(OSError(errno.ENOSPC, "No space left on device", "/data/out/samples.parquet"))
    assert code == 2 and "ENOSPC" in line and "/data/out/samples.parquet" in line and "--resume" in line
    code, line = error_line(RuntimeError("boom"))
    assert code == 1 and "internal error" in line and "--debug" in line
    code, line = error_line(ValueError("x" * 10_000 + "\n" + "y"))  # long or multi-line messages stay one line
    assert code == 2 and len(line) < 700 and "\n" not in line


def _truncate_mid_member(tar: Path) -> int:
    """Cut a tar inside its 6th member's data; returns how many whole samples precede the cut."""
    import tarfile

    with tarfile.open(tar) as tf:
        members = tf.getmembers()
    m = members[5]  # sample 1's .json (members: 0.jpg 0.txt 0.json 1.jpg 1.txt 1.json ...): sample 0 is whole
    data = tar.read_bytes()[: m.offset_data + max(1, m.size // 2)]
    tar.write_bytes(data)
    return 1


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_shard_among_four_is_curated_up_to_the_damage(tmp_path, shards, workers):
    whole_before = _truncate_mid_member(shards / "00002.tar")
    proc = mmcurate_cli("run", _recipe_file(tmp_path, shards, run={"workers": workers}), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mmcurate: warning:" in proc.stderr and "00002.tar" in proc.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    errors = manifest["shard_errors"]
    assert len(errors) == 1 and errors[0]["shard"].endswith("00002.tar"), errors
    c = manifest["counts"]
    assert c["accounting_ok"] and c["read"] == c["kept"] + c["rejected"]
    samples = pq.read_table(out / "samples.parquet")
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    damaged = [r for r in rejects if r["source"].endswith("00002.tar")]
    assert len(damaged) >= 1 and all(r["stage"] == "read" for r in damaged), damaged
    kept_from_damaged = [s for s in samples.column("source").to_pylist() if s.endswith("00002.tar")]
    assert len(kept_from_damaged) >= whole_before  # the samples before the damage were curated
    assert samples.num_rows >= 30 + whole_before  # the three whole shards are all there
    assert "Shards read only in part" in (out / "report.html").read_text()


def test_on_shard_error_fail_stops_with_one_line(tmp_path, shards):
    _truncate_mid_member(shards / "00001.tar")
    proc = mmcurate_cli("run", _recipe_file(tmp_path, shards, run={"on_shard_error": "fail"}), cwd=tmp_path)
    _assert_one_line_error(proc, "00001.tar", "on_shard_error")


def test_zero_byte_shard_is_a_shard_error_not_an_abort(tmp_path, shards):
    (shards / "00003.tar").write_bytes(b"")
    proc = mmcurate_cli("run", _recipe_file(tmp_path, shards), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [e["shard"].endswith("00003.tar") for e in manifest["shard_errors"]] == [True]
    assert manifest["counts"]["accounting_ok"]


def test_most_captions_missing_warns_naming_the_captions_option(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        (folder / f"img{i}.jpg").write_bytes(image_bytes(i, size=(64, 64)))
    # the user's captions are beside the images under a name the reader does not look for
    (folder / "my_captions.jsonl").write_text(
        "".join(json.dumps({"file": f"img{i}.jpg", "text": f"cat {i}"}) + "\n" for i in range(6))
    )
    proc = mmcurate_cli(
        "run", _recipe_file(tmp_path, folder, stages=[{"integrity": {}}, {"caption_filter": {}}]), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "mmcurate: warning:" in proc.stderr and "input.options.captions" in proc.stderr, proc.stderr


def test_llava_images_not_found_warns_naming_image_root(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    for i in range(4):
        (tmp_path / "elsewhere" / f"{i}.jpg").write_bytes(image_bytes(i, size=(64, 64)))
    data = tmp_path / "llava"
    data.mkdir()
    (data / "train.json").write_text(
        json.dumps(
            [
                {
                    "id": str(i),
                    "image": f"{i}.jpg",
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat is it?"},
                        {"from": "gpt", "value": "A cat."},
                    ],
                }
                for i in range(4)
            ]
        )
    )
    proc = mmcurate_cli("run", _recipe_file(tmp_path, data / "train.json", stages=[{"integrity": {}}]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "input.options.image_root" in proc.stderr, proc.stderr


def test_corrupt_safetensors_head_is_one_line(tmp_path, shards):
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    pytest.importorskip("safetensors")
    bad = tmp_path / "nsfw.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64)
    stages = [
        {"integrity": {}},
        {"clip_embed": {"model": "mmcurate-tiny", "weights": "random", "device": "cpu", "text": False}},
        {"clip_heads": {"nsfw_weights": str(bad), "nsfw_format": "mlp:relu:sigmoid"}},
    ]
    proc = mmcurate_cli("run", _recipe_file(tmp_path, shards, stages=stages), cwd=tmp_path)
    _assert_one_line_error(proc, "nsfw.safetensors")
