"""Image folders with caption tables, list files (format `table`), img2dataset's outputs, and start_notes."""

from __future__ import annotations

import csv
import json
import os
import pickle
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import io_fixtures as fx
from mmcurate.io import DuplicateKeyError, detect_format, open_reader
from mmcurate.io.base import split_read_rejects
from mmcurate.io.table import CAPTION_COLUMNS, IMAGE_PATH_COLUMNS
from mmcurate.pipeline.schema import INPUT_SCHEMA, REJECTS_SCHEMA


def rows_of(reader, batch_size: int = 3) -> list[dict]:
    """Every row; checks each batch is accounted for (kept + rejected == read) and keys are unique."""
    rows = []
    for shard in reader.shards():
        for batch in reader.read(shard, batch_size=batch_size):
            assert batch.schema.equals(reader.schema)
            kept, rejected = split_read_rejects(batch)
            assert kept.schema.equals(INPUT_SCHEMA) and rejected.schema.equals(REJECTS_SCHEMA)
            assert kept.num_rows + rejected.num_rows == batch.num_rows
            rows.extend(batch.to_pylist())
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == len(keys)
    for r in rows:
        if r["read_reason"] is not None:
            assert r["image"] is None and r["caption"] is None and r["meta"] == "{}"
    return rows


def write_table(path, rows: list[dict]):
    lower = str(path).lower()
    if lower.endswith((".jsonl", ".ndjson")):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif lower.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif lower.endswith((".csv", ".tsv")):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if lower.endswith(".tsv") else ",")
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_images(root, names) -> dict[str, bytes]:
    files = {}
    for i, name in enumerate(names):
        data = fx.image_bytes(i, "PNG" if name.endswith(".png") or "." not in name.rsplit("/", 1)[-1] else "JPEG")
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files[name] = data
    return files


# -- image folders ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["captions.jsonl", "captions.csv", "captions.tsv", "captions.parquet"])
def test_folder_finds_a_captions_table_in_its_root(tmp_path, name):
    files = make_images(tmp_path, ["a.jpg", "sub/b.png"])
    write_table(tmp_path / name, [{"file_name": "a.jpg", "caption": "A"}, {"file_name": "sub/b.png", "caption": "B"}])
    assert detect_format(tmp_path) == "folder"
    reader = open_reader(tmp_path)
    assert reader.captions == str(tmp_path / name)
    rows = {r["key"]: r for r in rows_of(reader)}
    assert {k: r["caption"] for k, r in rows.items()} == {"a": "A", "sub/b": "B"}
    assert rows["sub/b"]["image"] == files["sub/b.png"]
    assert reader.start_notes() == []


def test_folder_prefers_metadata_and_says_which_table_it_read(tmp_path):
    make_images(tmp_path, ["a.jpg"])
    write_table(tmp_path / "metadata.jsonl", [{"file_name": "a.jpg", "text": "from metadata"}])
    write_table(tmp_path / "captions.csv", [{"file_name": "a.jpg", "caption": "from captions"}])
    reader = open_reader(tmp_path)
    assert [r["caption"] for r in rows_of(reader)] == ["from metadata"]
    (note,) = reader.start_notes()
    assert "captions.csv" in note and "input.options.captions" in note


@pytest.mark.parametrize("column", CAPTION_COLUMNS)
def test_caption_column_names_real_datasets_use(tmp_path, column):
    make_images(tmp_path, ["a.jpg"])
    write_table(tmp_path / "metadata.jsonl", [{"file_name": "a.jpg", column: "the caption", "other": 1}])
    reader = open_reader(tmp_path)
    assert reader.caption_column == column
    (row,) = rows_of(reader)
    assert row["caption"] == "the caption" and json.loads(row["meta"]) == {"other": 1}


def test_caption_column_order_and_image_path_order():
    assert CAPTION_COLUMNS[:3] == ("caption", "text", "TEXT") and IMAGE_PATH_COLUMNS[0] == "file_name"


def test_table_without_caption_column_reads_null_captions_and_names_the_option(tmp_path):
    make_images(tmp_path, ["a.jpg"])
    write_table(tmp_path / "metadata.csv", [{"file_name": "a.jpg", "label": "cat"}])
    reader = open_reader(tmp_path)
    (row,) = rows_of(reader)
    assert row["caption"] is None and json.loads(row["meta"]) == {"label": "cat"}
    (note,) = reader.start_notes()
    assert "no caption column" in note and "caption_column" in note and "label" in note


def test_folder_notes_images_without_captions_and_missing_images(tmp_path):
    make_images(tmp_path / "imgs", [f"{i:03d}.jpg" for i in range(3)])
    (note,) = open_reader(tmp_path / "imgs").start_notes()
    assert note.startswith("found 3 images under") and "but no captions" in note
    assert "captions.jsonl/metadata.jsonl (file_name, caption)" in note and "input.options.captions: PATH" in note
    (tmp_path / "imgs" / "000.txt").write_text("a sidecar caption")
    assert open_reader(tmp_path / "imgs").start_notes() == []  # sidecars are captions
    (tmp_path / "empty").mkdir()
    (note,) = open_reader(tmp_path / "empty", format="folder").start_notes()
    assert "found no images" in note
    # a caption table whose rows name images that are not there, and images it does not list
    write_table(
        tmp_path / "imgs" / "metadata.jsonl",
        [{"file_name": "000.jpg", "caption": "x"}, {"file_name": "gone.jpg", "caption": "y"}],
    )
    notes = open_reader(tmp_path / "imgs").start_notes()
    assert any("1 of 2 rows" in n and "'gone.jpg'" in n and "missing_image" in n for n in notes), notes
    assert any("2 of 3 images" in n and "no row" in n for n in notes), notes


def test_folder_note_points_a_coco_tree_at_its_captions_file(tmp_path):
    make_images(tmp_path / "train2017", ["000000000001.jpg"])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2017.json").write_text('{"images": [], "annotations": []}')
    (note,) = open_reader(tmp_path).start_notes()
    assert "captions_train2017.json (format coco)" in note


# -- img2dataset outputs ---------------------------------------------------------------------------------------


def test_img2dataset_files_output_reads_as_a_folder(tmp_path):
    """output_format: files: 00000/000000000.jpg + .txt + .json, with 00000.parquet and 00000_stats.json beside."""
    for s in range(2):
        for i in range(2):
            key = f"{s:05d}{i:04d}"
            (tmp_path / f"{s:05d}").mkdir(exist_ok=True)
            (tmp_path / f"{s:05d}" / f"{key}.jpg").write_bytes(fx.image_bytes(s * 10 + i))
            (tmp_path / f"{s:05d}" / f"{key}.txt").write_text(f"caption {key}")
            (tmp_path / f"{s:05d}" / f"{key}.json").write_text(json.dumps({"key": key, "url": "http://x"}))
        pq.write_table(
            pa.table({"key": [f"{s:05d}0000"], "url": ["http://x"], "caption": ["c"], "status": ["success"]}),
            tmp_path / f"{s:05d}.parquet",
        )
        (tmp_path / f"{s:05d}_stats.json").write_text('{"successes": 2}')
    assert detect_format(tmp_path) == "folder"
    reader = open_reader(tmp_path)
    rows = rows_of(reader)
    assert [r["key"] for r in rows] == ["00000/000000000", "00000/000000001", "00001/000010000", "00001/000010001"]
    assert rows[0]["caption"] == "caption 000000000" and json.loads(rows[0]["meta"])["url"] == "http://x"
    assert reader.start_notes() == []


def test_img2dataset_webdataset_output_is_not_confused_by_its_parquet_and_stats(tmp_path):
    fx.img2dataset_shards(tmp_path, 2, 3)
    for s in range(2):
        # the per-shard parquet img2dataset writes beside each tar (no image bytes), and the stats
        pq.write_table(pa.table({"key": [f"{s:05d}0000"], "status": ["success"]}), tmp_path / f"{s:05d}.parquet")
        (tmp_path / f"{s:05d}_stats.json").write_text('{"successes": 3}')
    assert detect_format(tmp_path) == "webdataset"
    reader = open_reader(tmp_path)
    assert [s.rsplit("/", 1)[-1] for s in reader.shards()] == ["00000.tar", "00001.tar"]
    assert [reader.count(s) for s in reader.shards()] == [3, 3]
    assert len(rows_of(reader)) == 6


# -- list files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_list_file_reads_paths_captions_and_meta(tmp_path, ext):
    files = make_images(tmp_path / "imgs", ["a/1.jpg", "b/2.png", "3.webp", "blob"])
    table = [
        {"image": "imgs/a/1.jpg", "caption": "one", "url": "http://1"},
        {"image": "imgs/b/2.png", "caption": "two", "url": None},
        {"image": "./imgs/3.webp", "caption": "three", "url": "http://3"},
        {"image": "imgs/missing.jpg", "caption": "gone", "url": "http://4"},
        {"image": "imgs/blob", "caption": "no extension", "url": "http://5"},
    ]
    path = write_table(tmp_path / f"list.{ext}", table)
    assert detect_format(path) == "table"
    reader = open_reader(path, shard_size=2)
    assert reader.format == "table" and reader.shards() == [f"{path}@00000", f"{path}@00001", f"{path}@00002"]
    assert [reader.count(s) for s in reader.shards()] == [2, 2, 1]
    rows = rows_of(reader)
    assert [r["key"] for r in rows] == ["imgs/a/1", "imgs/b/2", "imgs/3", "imgs/missing", "imgs/blob"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["imgs/a/1"]["image"] == files["a/1.jpg"] and by_key["imgs/a/1"]["caption"] == "one"
    assert json.loads(by_key["imgs/a/1"]["meta"]) == {"url": "http://1"}
    assert json.loads(by_key["imgs/b/2"]["meta"]) == {}  # nulls (CSV: empty cells) are left out
    assert by_key["imgs/3"]["image_ext"] == "webp"
    assert by_key["imgs/missing"]["image"] is None and by_key["imgs/missing"]["read_reason"] is None
    assert by_key["imgs/blob"]["image_ext"] == "png"  # from the magic bytes
    (note,) = reader.start_notes()
    assert "1 of the first 5 rows" in note and "image_root" in note


def test_list_file_image_root_columns_and_duplicates(tmp_path):
    files = make_images(tmp_path / "imgs", ["x.jpg", "y.jpg"])
    (tmp_path / "meta").mkdir()
    path = write_table(
        tmp_path / "meta" / "l.csv", [{"filepath": "x.jpg", "title": "X"}, {"filepath": "y.jpg", "title": "Y"}]
    )
    reader = open_reader(path, image_root=tmp_path / "imgs")
    assert (reader.key_column, reader.caption_column) == ("filepath", "title")  # open_clip's CSV columns
    assert [(r["key"], r["caption"], r["image"]) for r in rows_of(reader)] == [
        ("x", "X", files["x.jpg"]),
        ("y", "Y", files["y.jpg"]),
    ]
    assert reader.start_notes() == []
    dup = write_table(tmp_path / "imgs" / "dup.jsonl", [{"path": "x.jpg", "text": "1"}, {"path": "x.jpg", "text": "2"}])
    with pytest.raises(DuplicateKeyError, match="'x'"):
        open_reader(dup)
    rows = rows_of(open_reader(dup, on_duplicate_key="suffix"))
    assert [(r["key"], r["caption"]) for r in rows] == [("x", "1"), ("x~1", "2")] and rows[1]["image"] == rows[0][
        "image"
    ]
    with pytest.raises(ValueError, match=r"no key column among file_name, image, path"):
        open_reader(write_table(tmp_path / "nokey.csv", [{"caption": "c"}]), format="table")
    with pytest.raises(ValueError, match=r"has no caption column 'cap'; columns: path, text"):
        open_reader(dup, caption_column="cap")
    with pytest.raises(FileNotFoundError, match="image_root"):
        open_reader(dup, image_root=tmp_path / "nope")


def test_list_file_never_reads_outside_its_root(tmp_path):
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xffSECRET")
    root = tmp_path / "root"
    make_images(root, ["ok.jpg"])
    (root / "link.jpg").symlink_to(secret)
    table = [
        {"image": "ok.jpg", "caption": "fine"},
        {"image": "../outside/secret.jpg", "caption": "dotdot"},
        {"image": str(secret), "caption": "absolute"},
        {"image": "link.jpg", "caption": "symlink"},
        {"image": str(root / "ok.jpg"), "caption": "absolute inside"},
        {"image": "sub/../ok.jpg", "caption": "dotdot inside"},
        {"image": None, "caption": "no path"},
    ]
    path = write_table(root / "list.jsonl", table)
    rows = rows_of(open_reader(path, on_duplicate_key="suffix"))
    got = {r["caption"] or r["read_detail"]: r for r in rows}
    assert len(rows) == len(table)
    reasons = sorted(r["read_reason"] or "-" for r in rows)
    assert reasons == ["-", "-", "-", "-", "path_outside_root", "path_outside_root", "path_outside_root"]
    assert got["fine"]["key"] == "ok" and got["absolute inside"]["key"] == "ok~1"
    assert got["dotdot inside"]["key"] == "ok~2" and got["dotdot inside"]["image"] == got["fine"]["image"]
    assert got["no path"]["key"] == "row_6" and got["no path"]["image"] is None
    assert all(b"SECRET" not in (r["image"] or b"") for r in rows)
    allowed = rows_of(open_reader(path, on_duplicate_key="suffix", allow_outside_root=True))
    assert sum(r["image"] == secret.read_bytes() for r in allowed) == 3


def test_json_detection_keeps_llava_and_finds_list_files(tmp_path):
    conv = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]
    write_table(tmp_path / "llava.json", [{"id": "1", "image": "a.jpg", "conversations": conv}])
    write_table(tmp_path / "llava.jsonl", [{"id": "1", "image": "a.jpg", "conversations": conv}])
    write_table(tmp_path / "text_only.jsonl", [{"id": "1", "conversations": conv}])
    write_table(tmp_path / "list.json", [{"image": "a.jpg", "caption": "c"}])
    write_table(tmp_path / "list.jsonl", [{"file_name": "a.jpg", "text": "c"}])
    (tmp_path / "coco.json").write_text('{"info": {}, "images": [], "annotations": []}')
    (tmp_path / "other.json").write_text('{"id": 1}')
    got = {p.name: detect_format(p) for p in sorted(tmp_path.iterdir())}
    assert got == {
        "coco.json": "coco",
        "list.json": "table",
        "list.jsonl": "table",
        "llava.json": "llava",
        "llava.jsonl": "llava",
        "other.json": "llava",  # the LLaVA reader says what is wrong with it
        "text_only.jsonl": "llava",
    }


def test_list_file_pickles_without_its_table(tmp_path):
    make_images(tmp_path, ["a.jpg", "b.jpg"])
    path = write_table(tmp_path / "l.csv", [{"image": "a.jpg", "caption": "A"}, {"image": "b.jpg", "caption": "B"}])
    reader = open_reader(path)
    blob = pickle.dumps(reader)
    assert len(blob) < 4096
    clone = pickle.loads(blob)
    assert fx.read_all(clone) == fx.read_all(reader) and json.dumps(reader.describe())


def test_list_file_special_files_and_size_limit(tmp_path):
    make_images(tmp_path, ["ok.jpg"])
    (tmp_path / "big.jpg").write_bytes(fx.image_bytes(1) + bytes(5000))
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "dir.jpg").mkdir()
    names = ["ok.jpg", "big.jpg", "fifo.jpg", "zero.jpg", "dir.jpg"]
    path = write_table(tmp_path / "l.csv", [{"image": n, "caption": n} for n in names])
    t = time.monotonic()
    rows = rows_of(open_reader(path, max_image_bytes=2000))
    assert time.monotonic() - t < 10  # the FIFO must not block
    got = {r["key"]: r["read_reason"] for r in rows}
    assert got == {
        "ok": None,
        "big": "too_large",
        "fifo": "not_a_file",
        "zero": "path_outside_root",
        "dir": "not_a_file",
    }
    with pytest.raises(ValueError, match="is not a regular file"):
        open_reader(tmp_path / "fifo.jpg", format="table")
