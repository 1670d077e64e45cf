"""mmcurate.curate / mmcurate.Pipeline: the executor's stages over an in-memory table (docs/python_api.md)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import encode
from helpers import default_recipe_for, run_local
from mmcurate.api import as_input_table
from mmcurate.pipeline.recipe import default_recipe_dict
from mmcurate.pipeline.schema import rejects_table
from mmcurate.pipeline.stage import MapStage, StageError, StageResult


@pytest.fixture(scope="module")
def photos(photos_rgb) -> list[bytes]:
    """Eight distinct JPEG photos, at least 200 px a side."""
    return [encode(p) for p in photos_rgb[:8]]


@pytest.fixture(scope="module")
def rows(photos) -> list[dict]:
    """Ten rows: six good photos, a byte-identical copy, a re-encoded (near) copy, a corrupt image and a short
    caption."""
    out = [{"key": f"s{i}", "image": photos[i], "caption": f"a photo number {i} of the set"} for i in range(6)]
    out.append({"key": "z_exact_copy", "image": photos[0], "caption": "the same bytes as s0 again"})
    near = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(io.BytesIO(photos[1])).convert("RGB"))
    out.append({"key": "z_near_copy", "image": encode(near, quality=70), "caption": "s1 once more, recompressed"})
    out.append({"key": "corrupt", "image": b"\xff\xd8\xff\xe0 not really a jpeg", "caption": "a broken file here"})
    out.append({"key": "short", "image": photos[6], "caption": "hi"})
    return out


STAGES = ["integrity", ("caption_filter", {"min_words": 3}), "exact_dedup", {"phash_dedup": {"max_distance": 10}}]


def _check_accounting(result, n):
    kept, rejected = result.kept.column("key").to_pylist(), result.rejected.column("key").to_pylist()
    assert len(kept) + len(rejected) == n and not set(kept) & set(rejected)
    assert result.stats["input"] == n and result.stats["kept"] == len(kept)


@pytest.mark.parametrize("form", ["arrow", "pandas", "rows", "columns"])
def test_curate_map_and_global_stages_on_every_input_form(rows, form):
    if form == "arrow":
        data = pa.Table.from_pylist(rows)
    elif form == "pandas":
        pd = pytest.importorskip("pandas")
        data = pd.DataFrame(rows)
    elif form == "rows":
        data = rows
    else:
        data = {c: [r[c] for r in rows] for c in rows[0]}
    result = mmcurate.curate_table(data, stages=STAGES)
    _check_accounting(result, len(rows))
    assert result.kept.column("key").to_pylist() == [f"s{i}" for i in range(6)]  # input order
    why = {r["key"]: (r["stage"], r["reason"]) for r in result.rejected.to_pylist()}
    assert why["corrupt"][0] == "integrity"
    assert why["short"] == ("caption_filter", "too_few_words")
    assert why["z_exact_copy"][0] == "exact_dedup"
    assert why["z_near_copy"][0] == "phash_dedup"
    # the rejected rows are the input's rows (image bytes included) plus stage, reason, detail
    assert result.rejected.column_names[-3:] == ["stage", "reason", "detail"]
    assert all(r["image"] is not None and r["detail"] for r in result.rejected.to_pylist())
    # the kept rows carry the stages' columns, and their original bytes
    for c in ("width", "height", "sha256", "phash"):
        assert c in result.kept.column_names
    by_key = {r["key"]: r for r in rows}
    assert all(r["image"] == by_key[r["key"]]["image"] for r in result.kept.to_pylist())
    dups = {r["key"]: r["duplicate_of"] for r in result.duplicates.to_pylist()}
    assert dups == {"z_exact_copy": "s0", "z_near_copy": "s1"}
    st = result.stats["stages"]
    assert st["integrity"]["reasons"] and st["exact_dedup"]["rejected"] == 1 and st["phash_dedup"]["rejected"] == 1
    assert "exact_dedup" in result.summary() and "6 kept" in result.summary()


def test_pairs_and_generated_keys(photos):
    pairs = [(photos[0], "a cat sitting on a mat"), (photos[0], "the very same picture"), (photos[2], None)]
    result = mmcurate.curate_table(pairs, stages=["integrity", "exact_dedup"])
    _check_accounting(result, 3)
    assert result.kept.column("key").to_pylist() == ["00000000", "00000002"]
    assert result.kept.column("source").to_pylist() == ["memory", "memory"]
    assert result.kept.column("image_ext").to_pylist() == ["jpg", "jpg"]
    assert result.rejected.to_pylist()[0]["stage"] == "exact_dedup"


def test_pipeline_builder_global_columns_and_reuse(rows):
    pipe = mmcurate.Pipeline().add_stage("integrity").add_stage("phash_dedup", max_distance=6).add_stage("split")
    assert repr(pipe) == "Pipeline(['integrity', 'phash_dedup', 'split'])"
    first = pipe.run(rows)
    _check_accounting(first, len(rows))
    assert set(first.kept.column("split").to_pylist()) <= {"train", "val", "test"}
    assert first.kept.column("split").null_count == 0
    second = pipe.run(pa.Table.from_pylist(rows))  # the set-up stages are reused
    assert second.kept.equals(first.kept) and second.rejected.equals(first.rejected)


def test_same_answer_as_the_executor(demo_input, tmp_path):
    """curate over the demo input read into one table keeps and rejects what mmcurate.run does."""
    from mmcurate.io import open_reader

    out = tmp_path / "out"
    run_local(default_recipe_for(demo_input, out))
    reader = open_reader(str(demo_input))
    table = pa.concat_tables([b for s in reader.shards() for b in reader.read(s, batch_size=64)])
    result = mmcurate.curate_table(table, recipe=default_recipe_dict(), batch_size=37)
    _check_accounting(result, table.num_rows)
    samples = pq.read_table(out / "samples.parquet")
    rejects = pq.read_table(out / "rejects.parquet")
    assert sorted(result.kept.column("key").to_pylist()) == sorted(samples.column("key").to_pylist())
    got = {(r["key"], r["stage"], r["reason"]) for r in result.rejected.to_pylist()}
    assert got == {(r["key"], r["stage"], r["reason"]) for r in rejects.to_pylist()}
    dups = pq.read_table(out / "duplicates.parquet").select(["key", "duplicate_of"])
    assert sorted(result.duplicates.select(["key", "duplicate_of"]).to_pylist(), key=str) == sorted(
        dups.to_pylist(), key=str
    )
    caption = dict(zip(samples.column("key").to_pylist(), samples.column("caption").to_pylist()))
    assert all(caption[r["key"]] == r["caption"] for r in result.kept.to_pylist())  # caption_clean's output


class _DropOdd(MapStage):
    """A third-party map stage given as an object: rejects odd rows."""

    name = "drop_odd"

    def process(self, batch):
        idx = np.arange(batch.num_rows)
        odd = pa.array(idx % 2 == 1)
        bad = batch.filter(odd)
        return StageResult(
            batch.filter(pa.array(idx % 2 == 0)),
            rejects_table(bad.column("key"), bad.column("source"), self.name, "odd", ["odd row"] * bad.num_rows),
        )


def test_stage_objects_batches_and_extra_columns(photos):
    data = {"image": [photos[i % 4] for i in range(9)], "caption": ["x"] * 9, "label": list(range(9))}
    result = mmcurate.curate_table(data, stages=[_DropOdd()], batch_size=4)  # batches of 4, 4, 1: odd within each
    _check_accounting(result, 9)
    assert result.kept.column("label").to_pylist() == [0, 2, 4, 6, 8]
    assert result.rejected.column("reason").to_pylist() == ["odd"] * 4
    assert result.stats["stages"]["drop_odd"]["in"] == 9


def test_pil_images_are_encoded(photos_rgb):
    from PIL import Image

    result = mmcurate.curate_table([(Image.fromarray(photos_rgb[0]), "a photo")], stages=["integrity"])
    assert result.kept.column("image_ext").to_pylist() == ["png"]
    assert result.kept.column("format").to_pylist()[0].lower() == "png"


@pytest.mark.parametrize(
    ("data", "stages", "match"),
    [
        (42, ["integrity"], "data must be a pyarrow Table"),
        ([], ["integrity"], "data has no rows"),
        ([{"caption": "no image"}], ["integrity"], "needs an 'image' column"),
        ([("/tmp/a.jpg", "a path")], ["integrity"], "a path\\?"),
        ([(b"x", "a", "b")], ["integrity"], "expected an \\(image_bytes, caption\\) pair"),
        ({"image": [b"a", b"b"], "key": ["k", "k"]}, ["integrity"], "keys repeat"),
        ({"image": [b"a"], "key": [None]}, ["integrity"], "null value"),
        ({"image": ["text"]}, ["integrity"], "image must be encoded bytes"),
        ({"image": [b"a"], "caption": [3]}, ["integrity"], "'caption' must hold text"),
        ({"image": [b"a"], "stage": ["x"]}, ["integrity"], "reserved"),
        ([(b"a", "c")], ["no_such_stage"], "unknown stage 'no_such_stage'"),
        ([(b"a", "c")], [("image_filter", {"min_sid": 3})], "unknown parameter"),
        ([(b"a", "c")], ["integrity", "integrity"], "in the pipeline already"),
        ([(b"a", "c")], [42], "a stage is a name"),
    ],
)
def test_bad_input_one_line_errors(data, stages, match):
    with pytest.raises(StageError, match=match) as err:
        mmcurate.curate_table(data, stages=stages)
    assert "\n" not in str(err.value)


def test_bad_arguments():
    with pytest.raises(StageError, match="stages=\\[...\\] or recipe"):
        mmcurate.curate_table([(b"a", "c")])
    with pytest.raises(StageError, match="not both"):
        mmcurate.curate_table([(b"a", "c")], stages=["integrity"], recipe=default_recipe_dict())
    with pytest.raises(StageError, match="batch_size"):
        mmcurate.curate_table([(b"a", "c")], stages=["integrity"], batch_size=0)
    with pytest.raises(StageError, match="no stages"):
        mmcurate.Pipeline().run([(b"a", "c")])


def test_input_table_columns(photos):
    t = as_input_table({"image": [photos[0]], "meta": [{"url": "http://x"}], "extra": [1], "key": [7]})
    assert t.column_names == ["key", "source", "image", "image_ext", "caption", "meta", "extra"]
    assert t.column("key").to_pylist() == ["7"] and t.column("meta").to_pylist() == ['{"url": "http://x"}']
    assert t.column("caption").to_pylist() == [None]
