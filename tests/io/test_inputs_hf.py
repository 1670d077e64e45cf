"""Hugging Face Parquet / Arrow with the image bytes inside (format `hf`), built with the `datasets` library, and
img2dataset's `output_format: parquet`."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_inputs_tables import rows_of

import io_fixtures as fx
from mmcurate.io import detect_format, open_reader

datasets = pytest.importorskip("datasets")


def image_dataset(n: int = 4, offset: int = 0):
    """A datasets.Dataset with an Image column (PNG and JPEG bytes), a caption and a label."""
    images = [{"bytes": fx.image_bytes(offset + i, "PNG" if i % 2 else "JPEG"), "path": None} for i in range(n)]
    data = {"image": images, "text": [f"caption {offset + i}" for i in range(n)], "label": list(range(n))}
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())


def test_single_parquet_from_datasets(tmp_path, monkeypatch):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(fx.image_bytes(99))
    root = tmp_path / "ds"
    root.mkdir()
    (root / "local.png").write_bytes(fx.image_bytes(98, "PNG"))
    monkeypatch.chdir(root)  # datasets checks a relative image path against the working directory
    images = [
        {"bytes": fx.image_bytes(0), "path": None},
        {"bytes": fx.image_bytes(1, "PNG"), "path": "photo.png"},
        {"bytes": None, "path": str(outside)},  # to_parquet keeps a path-only image as a path
        {"bytes": None, "path": "local.png"},
        None,
    ]
    ds = datasets.Dataset.from_dict(
        {"image": images, "text": ["a", "b", "c", "d", None], "label": [1, 2, 3, 4, 5]}
    ).cast_column("image", datasets.Image())
    path = root / "train.parquet"
    ds.to_parquet(str(path))
    assert detect_format(path) == "hf"
    reader = open_reader(path)
    assert reader.format == "hf" and (reader.image_column, reader.caption_column) == ("image", "text")
    assert reader.shards() == [f"{path}@00000"] and reader.count(reader.shards()[0]) == 5
    rows = rows_of(reader)
    assert [r["key"] for r in rows] == [f"train/{i:09d}" for i in range(5)]
    assert rows[0]["image"] == fx.image_bytes(0) and rows[0]["image_ext"] == "jpg"  # from the magic
    assert rows[0]["caption"] == "a" and json.loads(rows[0]["meta"]) == {"label": 1}
    assert rows[1]["image_ext"] == "png" and json.loads(rows[1]["meta"]) == {"label": 2, "image_path": "photo.png"}
    assert rows[2]["read_reason"] == "path_outside_root"  # never read outside the input
    assert rows[3]["image"] == (root / "local.png").read_bytes() and rows[3]["image_ext"] == "png"
    assert rows[4]["image"] is None and rows[4]["read_reason"] is None and rows[4]["caption"] is None
    (note,) = reader.start_notes()
    assert "1 of the first 5 images" in note and "allow_outside_root" in note and "outside.jpg" in note
    allowed = rows_of(open_reader(path, allow_outside_root=True))
    assert allowed[2]["image"] == outside.read_bytes()
    too_large = rows_of(open_reader(path, max_image_bytes=100))
    assert too_large[0]["read_reason"] == "too_large" and "max_image_bytes" in too_large[0]["read_detail"]


def test_hub_layout_with_splits_and_row_group_shards(tmp_path):
    (tmp_path / "data").mkdir()
    image_dataset(4).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    image_dataset(2, offset=10).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text("---\nconfigs: ...\n---\n")
    assert detect_format(tmp_path) == "hf"
    reader = open_reader(tmp_path)
    rows = rows_of(reader)
    assert [r["key"] for r in rows][:1] == ["data/test-00000-of-00001/000000000"] and len(rows) == 6
    train = open_reader(tmp_path, split="train")
    assert [r["caption"] for r in rows_of(train)] == [f"caption {i}" for i in range(4)]
    with pytest.raises(ValueError, match=r"no file of split 'validation'.*input.options.split"):
        open_reader(tmp_path, split="validation")
    # one shard per row group, counted from the footer; batches stream within it
    table = pq.read_table(tmp_path / "data" / "train-00000-of-00001.parquet")
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    reader = open_reader(tmp_path, split="train")
    assert [reader.count(s) for s in reader.shards()] == [3, 1]
    assert [s.rsplit("@", 1)[1] for s in reader.shards()] == ["00000", "00001"]
    assert [b.num_rows for b in reader.read(reader.shards()[0], batch_size=2)] == [2, 1]
    assert [r["key"] for r in rows_of(reader)] == [f"data/train-00000-of-00001/{i:09d}" for i in range(4)]
    # split subfolders
    (tmp_path / "sub" / "data" / "validation").mkdir(parents=True)
    image_dataset(1).to_parquet(str(tmp_path / "sub" / "data" / "validation" / "0000.parquet"))
    assert [r["key"] for r in rows_of(open_reader(tmp_path / "sub", split="validation"))] == [
        "data/validation/0000/000000000"
    ]


def test_save_to_disk_and_dataset_dict(tmp_path):
    ds = image_dataset(5)
    ds.save_to_disk(str(tmp_path / "saved"))
    assert detect_format(tmp_path / "saved") == "hf"
    reader = open_reader(tmp_path / "saved", shard_size=2)
    assert [reader.count(s) for s in reader.shards()] == [2, 2, 1]
    rows = rows_of(reader)
    assert [r["caption"] for r in rows] == [f"caption {i}" for i in range(5)]
    assert [r["image"] for r in rows] == [fx.image_bytes(i, "PNG" if i % 2 else "JPEG") for i in range(5)]
    assert [r["image_ext"] for r in rows] == ["jpg", "png", "jpg", "png", "jpg"]
    dd = datasets.DatasetDict({"train": image_dataset(3), "test": image_dataset(2, offset=5)})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert detect_format(tmp_path / "dd") == "hf"
    rows = rows_of(open_reader(tmp_path / "dd"))
    assert len(rows) == 5 and {r["key"].split("/")[0] for r in rows} == {"train", "test"}
    test = rows_of(open_reader(tmp_path / "dd", split="test"))
    assert [r["caption"] for r in test] == ["caption 5", "caption 6"]
    assert [r["key"] for r in test] == ["test/data-00000-of-00001/000000000", "test/data-00000-of-00001/000000001"]


def img2dataset_parquet(path, keys, seed=0, caption=True):
    cols = {
        "key": keys,
        "url": [f"http://x/{k}.jpg" for k in keys],
        "status": ["success"] * len(keys),
        "width": [24] * len(keys),
        "jpg": [fx.image_bytes(seed + i) for i in range(len(keys))],
    }
    if caption:
        cols["caption"] = [f"caption {k}" for k in keys]
    pq.write_table(pa.table(cols), path)


def test_img2dataset_parquet_output(tmp_path):
    for s in range(2):
        img2dataset_parquet(tmp_path / f"{s:05d}.parquet", [f"{s:05d}{i:04d}" for i in range(3)], seed=s * 10)
        (tmp_path / f"{s:05d}_stats.json").write_text('{"successes": 3}')
    assert detect_format(tmp_path) == "hf"
    reader = open_reader(tmp_path)
    assert (reader.image_column, reader.caption_column, reader.key_column) == ("jpg", "caption", "key")
    rows = rows_of(reader)
    assert [r["key"] for r in rows] == [f"{s:05d}{i:04d}" for s in range(2) for i in range(3)]
    assert rows[0]["image"] == fx.image_bytes(0) and rows[0]["image_ext"] == "jpg"
    assert json.loads(rows[0]["meta"]) == {"url": "http://x/000000000.jpg", "status": "success", "width": 24}
    assert rows[0]["caption"] == "caption 000000000"


def test_hf_notes_errors_bad_keys_and_pickling(tmp_path):
    img2dataset_parquet(tmp_path / "nocap.parquet", ["a", "../b", "a"], caption=False)
    with pytest.raises(Exception, match="duplicate sample key 'a'"):
        rows_of(open_reader(tmp_path / "nocap.parquet"))
    reader = open_reader(tmp_path / "nocap.parquet", on_duplicate_key="suffix")
    (note,) = reader.start_notes()
    assert "no caption column" in note and "input.options.caption_column" in note
    rows = rows_of(reader)
    assert [r["read_reason"] for r in rows] == [None, "bad_key", None] and rows[2]["key"] == "a~1"
    blob = pickle.dumps(reader)
    assert fx.read_all(pickle.loads(blob)) == fx.read_all(reader)
    assert json.dumps(reader.describe())
    pq.write_table(pa.table({"path": ["a.jpg"], "caption": ["c"]}), tmp_path / "paths.parquet")
    assert detect_format(tmp_path / "paths.parquet") == "table"  # image paths, not bytes
    with pytest.raises(ValueError, match="has no image column .*use format: table"):
        open_reader(tmp_path / "paths.parquet", format="hf")
    with pytest.raises(ValueError, match="column 'caption' holds string, not image bytes"):
        open_reader(tmp_path / "paths.parquet", format="hf", image_column="caption")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="cannot read .*broken.parquet"):
        open_reader(tmp_path / "broken.parquet")


def test_damaged_row_group_gives_rows_then_one_damage_row(tmp_path):
    path = tmp_path / "d.parquet"
    table = pa.table({"key": [f"k{i}" for i in range(6)], "jpg": [fx.image_bytes(i) for i in range(6)]})
    pq.write_table(table, path, row_group_size=3, compression="none")
    meta = pq.read_metadata(path)
    start = meta.row_group(1).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 64] = b"\x17" * 64  # garbage over the second row group's page header
    path.write_bytes(bytes(data))
    reader = open_reader(path)
    first, second = reader.shards()
    assert [r["key"] for r in rows_of(reader, batch_size=10) if r["read_reason"] is None][:3] == ["k0", "k1", "k2"]
    damaged = list(reader.read(second))
    rows = [r for b in damaged for r in b.to_pylist()]
    assert rows[-1]["key"] == "__shard_error__" and rows[-1]["read_reason"] in ("shard_unreadable", "shard_truncated")
    assert len(rows_of(open_reader(path), batch_size=1)) >= 4
