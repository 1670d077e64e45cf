"""COCO captions JSON (format `coco`)."""

from __future__ import annotations

import json
import pickle

import pytest
from test_inputs_tables import rows_of

import io_fixtures as fx
from mmcurate.io import DuplicateKeyError, detect_format, open_reader


def coco_tree(root, images=None, annotations=None, split="train2017"):
    """root/annotations/captions_<split>.json and root/<split>/ with the images on disk."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    if images is None:
        images = [
            {"id": 391895, "file_name": "000000391895.jpg", "width": 640, "height": 360, "license": 3},
            {"id": 9, "file_name": "000000000009.jpg", "width": 640, "height": 480},
            {"id": 30, "file_name": "000000000030.jpg", "width": 640, "height": 428},  # no file on disk
            {"id": 42, "file_name": "000000000042.jpg", "width": 10, "height": 10},  # no annotation
        ]
    if annotations is None:
        annotations = [
            {"id": 770337, "image_id": 391895, "caption": "A man with a red helmet on a small moped."},
            {"id": 100, "image_id": 391895, "caption": "First by annotation id."},
            {"id": 5, "image_id": 9, "caption": "Closeup of bins of food."},
            {"id": 6, "image_id": 30, "caption": "A flower vase."},
            {"id": 7, "image_id": 12345, "caption": "An orphan annotation."},
        ]
    files = {}
    for i, img in enumerate(images):
        if isinstance(img, dict) and img.get("id") in (391895, 9, 42):
            files[img["file_name"]] = fx.image_bytes(i)
            (root / split / img["file_name"]).write_bytes(files[img["file_name"]])
    path = root / "annotations" / f"captions_{split}.json"
    path.write_text(json.dumps({"info": {"year": 2017}, "licenses": [], "images": images, "annotations": annotations}))
    return path, files


def test_coco_one_sample_per_image(tmp_path):
    path, files = coco_tree(tmp_path / "coco")
    assert detect_format(path) == "coco"
    reader = open_reader(path, shard_size=2)
    assert reader.format == "coco" and reader.root == str(tmp_path / "coco" / "train2017")
    assert [reader.count(s) for s in reader.shards()] == [2, 2, 1]
    rows = rows_of(reader)
    by_key = {r["key"]: r for r in rows}
    assert [r["key"] for r in rows] == ["9", "30", "42", "391895", "annotation_7"]  # image-id order, then rejects
    first = by_key["391895"]
    assert first["image"] == files["000000391895.jpg"] and first["image_ext"] == "jpg"
    assert first["caption"] == "First by annotation id."
    meta = json.loads(first["meta"])
    assert meta["coco_id"] == 391895 and (meta["width"], meta["height"]) == (640, 360) and meta["license"] == 3
    assert meta["captions"] == ["First by annotation id.", "A man with a red helmet on a small moped."]
    assert meta["annotation_ids"] == [100, 770337]
    assert by_key["30"]["image"] is None and by_key["30"]["read_reason"] is None  # integrity: missing_image
    assert by_key["42"]["caption"] is None and json.loads(by_key["42"]["meta"])["captions"] == []
    orphan = by_key["annotation_7"]
    assert orphan["read_reason"] == "bad_annotation" and "12345" in orphan["read_detail"]
    notes = reader.start_notes()
    assert any("bad_annotation" in n for n in notes)
    assert any("1 of the first 4 images" in n and "image_root" in n for n in notes), notes


def test_coco_per_caption(tmp_path):
    path, files = coco_tree(tmp_path / "coco")
    rows = rows_of(open_reader(path, per_caption=True))
    ok = [r for r in rows if r["read_reason"] is None]
    assert [r["key"] for r in ok] == ["9_5", "30_6", "42", "391895_100", "391895_770337"]
    by_key = {r["key"]: r for r in ok}
    assert by_key["391895_770337"]["caption"] == "A man with a red helmet on a small moped."
    assert by_key["391895_770337"]["image"] == by_key["391895_100"]["image"] == files["000000391895.jpg"]
    meta = json.loads(by_key["391895_770337"]["meta"])
    assert meta["annotation_id"] == 770337 and len(meta["captions"]) == 2
    with pytest.raises(ValueError, match="per_caption must be true or false"):
        open_reader(path, per_caption="yes")


def test_coco_image_root_rules(tmp_path):
    # <json dir>/<split>
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "val2014").mkdir()
    (flat / "val2014" / "a.jpg").write_bytes(fx.image_bytes(1))
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": "c"}]}
    (flat / "captions_val2014.json").write_text(json.dumps(doc))
    assert open_reader(flat / "captions_val2014.json").root == str(flat / "val2014")
    # else the JSON's directory, unless image_root is given
    (flat / "mine.json").write_text(json.dumps(doc))
    assert open_reader(flat / "mine.json", format="coco").root == str(flat)
    (row,) = rows_of(open_reader(flat / "mine.json", format="coco", image_root=flat / "val2014"))
    assert row["image"] == fx.image_bytes(1)
    with pytest.raises(FileNotFoundError, match="image_root"):
        open_reader(flat / "mine.json", format="coco", image_root=flat / "nope")


def test_coco_never_reads_outside_image_root_and_rejects_malformed_records(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8\xffSECRET")
    images = [
        {"id": 1, "file_name": "../../secret.jpg"},
        {"id": 2, "file_name": str(tmp_path / "secret.jpg")},
        {"file_name": "no_id.jpg"},
        "not an object",
    ]
    annotations = [{"id": 1, "image_id": 1, "caption": "x"}, {"id": 2, "image_id": 2}, ["bad"]]
    path, _ = coco_tree(tmp_path / "coco", images, annotations)
    rows = rows_of(open_reader(path))
    got = {r["key"]: r["read_reason"] for r in rows}
    assert got == {
        "1": "path_outside_root",
        "2": "path_outside_root",
        "image_2": "bad_annotation",
        "image_3": "bad_annotation",
        "annotation_2": "bad_annotation",
        "annotation_index_2": "bad_annotation",
    }
    assert all(b"SECRET" not in (r["image"] or b"") for r in rows)


def test_coco_errors_and_duplicates(tmp_path):
    bad = tmp_path / "captions_x.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a COCO captions file"):
        open_reader(bad)
    bad.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match="instances_"):
        open_reader(bad)
    dup = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], "annotations": []}
    bad.write_text(json.dumps(dup))
    with pytest.raises(DuplicateKeyError, match="'1'"):
        open_reader(bad)
    reader = open_reader(bad, on_duplicate_key="suffix")
    assert [r["key"] for r in rows_of(reader)] == ["1", "1~1"]
    assert any("no caption annotations" in n for n in reader.start_notes())


def test_coco_pickles_without_its_parse(tmp_path):
    path, _ = coco_tree(tmp_path / "coco")
    reader = open_reader(path)
    blob = pickle.dumps(reader)
    assert len(blob) < 4096
    assert fx.read_all(pickle.loads(blob)) == fx.read_all(reader) and json.dumps(reader.describe())
