"""image_quality stage: columns from integrity's decode (no second decode), its own decode when they are absent,
report-only defaults, the threshold reasons and details, text-only rows; phash_dedup's low-information rule."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from helpers import assert_accounted, input_table
from mmcurate.ops.quality import QUALITY_COLUMNS
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.stage import registry
from mmcurate.stages.image import LOW_INFORMATION_STATS, LOW_INFORMATION_TOLERANCE


def jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def table() -> pa.Table:
    photo = data.astronaut()[::2, ::2]
    rows = [
        ("photo", jpeg(photo)),
        ("dark", jpeg((photo * 0.05).astype(np.uint8))),
        ("bright", jpeg((photo.astype(int) // 10 + 230).astype(np.uint8))),  # washed out
        ("blurry", jpeg(np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(12))))),
        ("blank", jpeg(np.full((200, 200, 3), 128, np.uint8))),
        ("broken", jpeg(photo)[:300]),
    ]
    return input_table(rows)


def run(name, params, batch):
    return registry.create(name, params).process(batch)


def test_report_only_by_default_and_no_second_decode(table, monkeypatch):
    integrity = run("integrity", {}, table)
    for c in QUALITY_COLUMNS:
        assert c in integrity.kept.column_names
    assert integrity.kept.schema.field("sharpness").type == pa.float32()
    assert integrity.kept.schema.field("low_information").type == pa.bool_()

    import mmcurate.ops

    def no_decode(*a, **k):
        raise AssertionError("image_quality decoded although integrity stored the columns")

    monkeypatch.setattr(mmcurate.ops, "phash_bytes", no_decode)
    result = run("image_quality", {}, integrity.kept)
    assert result.rejected.num_rows == 0 and result.kept.equals(integrity.kept)


def test_thresholds_reasons_and_details(table):
    integrity = run("integrity", {}, table).kept
    # min_sharpness above the suggested 50: the blurred 256 px photo measures ~110, the sharp one ~10,000
    params = {"min_sharpness": 500, "min_brightness": 15, "max_brightness": 240, "reject_low_information": True}
    result = run("image_quality", params, integrity)
    assert_accounted(integrity, result, "image_quality")
    got = {r["key"]: (r["reason"], r["detail"]) for r in result.rejected.to_pylist()}
    assert set(got) == {"dark", "bright", "blurry", "blank"}
    assert got["blank"][0] == "low_information" and "entropy 0.00 bits" in got["blank"][1]
    assert got["dark"][0] == "too_dark" and "< min_brightness 15" in got["dark"][1]
    assert got["bright"][0] == "too_bright" and "> max_brightness 240" in got["bright"][1]
    assert got["blurry"][0] == "blurry" and "< min_sharpness 500" in got["blurry"][1]
    assert result.kept.column("key").to_pylist() == ["photo"]


def test_decodes_itself_without_integrity_columns(table):
    """Same values as integrity's fused decode; undecodable images rejected with the decoder's status."""
    own = run("image_quality", {}, table)
    assert_accounted(table, own, "image_quality")
    assert {r["key"]: r["reason"] for r in own.rejected.to_pylist()} == {"broken": "truncated"}
    stored = run("integrity", {}, table).kept
    for c in QUALITY_COLUMNS:
        assert own.kept.column(c).equals(stored.column(c)), c
    header_only = run("integrity", {"full_decode": False}, table).kept
    assert "sharpness" not in header_only.column_names
    assert run("image_quality", {}, header_only).kept.column("sharpness").equals(stored.column("sharpness"))


def test_text_only_rows_pass_with_null_columns():
    t = input_table([("img", jpeg(data.camera()[::2, ::2])), ("text", None)], has_image=[True, False])
    for batch in (t, run("integrity", {}, t).kept):
        result = run("image_quality", {"min_sharpness": 1e9, "reject_low_information": True}, batch)
        assert {r["key"] for r in result.rejected.to_pylist()} == {"img"}
        assert result.kept.column("key").to_pylist() == ["text"]
        assert all(result.kept.column(c).null_count == 1 for c in QUALITY_COLUMNS)


def test_params_are_checked():
    with pytest.raises(ValueError, match="min_brightness"):
        registry.create("image_quality", {"min_brightness": 200, "max_brightness": 100})
    with pytest.raises(ValueError, match="min_sharpness"):
        registry.create("image_quality", {"min_sharpness": "high"})
    with pytest.raises(ValueError):
        registry.create("image_quality", {"reject_low_information": "yes"})


def placeholder() -> np.ndarray:
    img = Image.new("RGB", (300, 300), (228, 228, 228))
    draw = ImageDraw.Draw(img)
    draw.rectangle((110, 80, 190, 140), outline=(150, 150, 150), width=3)
    draw.text((70, 170), "No image available", fill=(120, 120, 120))
    return np.asarray(img)


def test_phash_dedup_links_low_information_images_only_to_look_alike_copies():
    """pHash links a low-information image only to another one, within low_information_radius bits and with the same
    look (brightness, contrast, colourfulness): a placeholder card and its re-encoding, a grey square and its
    re-encoding, but not a square of another grey nor a flat image and a photo. low_information_radius null: never
    (their byte copies are exact_dedup's). Photos are linked either way."""
    photo = data.coffee()[::2, ::2]
    grey = np.full((128, 128, 3), 128, np.uint8)
    rows = [("card", jpeg(placeholder(), 95)), ("card_q75", jpeg(placeholder(), 75))]
    rows += [("photo", jpeg(photo, 95)), ("photo_q70", jpeg(photo, 70))]
    rows += [("grey", jpeg(grey, 95)), ("grey_q60", jpeg(grey, 60)), ("light", jpeg(grey + 80, 95))]
    meta = run("integrity", {}, input_table(rows)).kept
    assert meta.column("low_information").to_pylist() == [True, True, False, False, True, True, True]
    on = run_on_table(registry.create("phash_dedup", {}), meta)
    assert set(on.rejected.column("key").to_pylist()) == {"card_q75", "photo_q70", "grey_q60"}
    assert on.stats.low_information_duplicates == 2
    assert {r["duplicate_of"] for r in on.duplicates.to_pylist() if r["key"] == "grey_q60"} == {"grey"}
    never = run_on_table(registry.create("phash_dedup", {"low_information_radius": None}), meta)
    assert set(never.rejected.column("key").to_pylist()) == {"photo_q70"}
    off = run_on_table(registry.create("phash_dedup", {"skip_low_information": False}), meta)
    assert {"card_q75", "photo_q70", "grey_q60"} <= set(off.rejected.column("key").to_pylist())
    with pytest.raises(ValueError, match="low_information_radius"):
        registry.create("phash_dedup", {"low_information_radius": 65})
    # the map part measures the flag itself when integrity did not (one decode)
    part = registry.create("phash_dedup", {}).map_part.process(input_table(rows)).kept
    assert part.column("low_information").to_pylist() == [True, True, False, False, True, True, True]
    # exact mode reads integrity's flag and adds no second set of quality columns
    exact = registry.create("phash_dedup", {"mode": "exact", "low_information_radius": None})
    assert set(run_on_table(exact, meta).rejected.column("key").to_pylist()) == {"photo_q70"}
    assert "low_information" not in exact.map_part.process(input_table(rows)).kept.column_names
    # a table without the flag (an older run) is linked as before
    legacy = run_on_table(registry.create("phash_dedup", {}), meta.drop_columns(list(QUALITY_COLUMNS)))
    assert {"card_q75", "photo_q70", "grey_q60"} <= set(legacy.rejected.column("key").to_pylist())


def _low_information_survivors(n=1000, n_shards=4, seed=0):
    """pHash survivors with the quality columns: normal images with near copies (0..10 bits), low-information ones
    with near copies (0..3 bits) whose brightness / contrast / colourfulness agree or not (0..5 levels apart), some
    sharing a normal image's code, nulls; cut into uneven shards."""
    rng = np.random.default_rng(seed)
    ph = np.zeros(n, np.uint64)
    low = rng.random(n) < 0.4
    stats = rng.uniform(0, 200, (n, 3)).astype(np.float32)
    for i in range(1, n):
        j = int(rng.integers(i))
        if rng.random() < 0.5:
            low[i] = low[j] if rng.random() < 0.85 else low[i]  # mostly a copy of the same kind
            flips = int(rng.integers(0, 4 if low[i] and low[j] else 11))
            ph[i] = ph[j]
            for b in rng.choice(64, flips, replace=False):
                ph[i] ^= np.uint64(1) << np.uint64(b)
            stats[i] = stats[j] + rng.uniform(-5, 5, 3).astype(np.float32)  # within the tolerance or not
        else:
            ph[i] = np.uint64(int(rng.integers(0, 2**63)))
            stats[i] = rng.uniform(0, 200, 3)
    valid = np.ones(n, bool)
    valid[rng.choice(n, 10, replace=False)] = False
    table = pa.table(
        {
            "key": [f"k{i:05d}" for i in rng.permutation(n)],
            "source": ["s"] * n,
            "phash": pa.array(ph, pa.uint64(), mask=~valid),
            "low_information": pa.array(low, pa.bool_(), mask=~valid),
            **{c: pa.array(stats[:, k], pa.float32(), mask=~valid) for k, c in enumerate(LOW_INFORMATION_STATS)},
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, n), n_shards - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def test_low_information_links_are_the_same_sharded_and_in_memory_and_pairwise(tmp_path):
    """The two pHash searches (other images within max_distance, low-information ones among themselves within
    low_information_radius and the look tolerance): sharded mode gives memory mode's rejects and links, and those
    equal the pairwise definition (star linkage over every allowed pair, no pair across the two kinds)."""
    import pyarrow.parquet as pq

    from mmcurate.curate import dedup
    from mmcurate.pipeline.global_phase import MemoryGlobalContext
    from mmcurate.pipeline.global_sharded import ShardedGlobalContext, make_ids
    from mmcurate.pipeline.stage import SAMPLE_ID

    shards = _low_information_survivors()
    work = tmp_path / "_work"
    (work / "meta").mkdir(parents=True)
    for i, t in enumerate(shards):
        pq.write_table(t, work / "meta" / f"{i:05d}.parquet")
    stage = registry.create("phash_dedup", {})
    table = pa.concat_tables(
        [t.append_column(SAMPLE_ID, pa.array(make_ids(i, np.arange(t.num_rows)))) for i, t in enumerate(shards)]
    )
    mem = stage.run(MemoryGlobalContext.from_table(table))
    sh = stage.run(ShardedGlobalContext(work, len(shards), parallelism=2))
    assert sh.rejected.equals(mem.rejected) and sh.duplicates.equals(mem.duplicates)
    assert sh.stats.low_information_duplicates == mem.stats.low_information_duplicates >= 30
    # the pairwise definition
    sub = table.filter(table.column("phash").is_valid())
    codes = sub.column("phash").to_numpy().astype(np.uint64)
    low = sub.column("low_information").to_numpy(zero_copy_only=False)
    stats = np.stack([sub.column(c).to_numpy() for c in LOW_INFORMATION_STATS], axis=1).astype(np.float64)
    i, j = np.triu_indices(len(codes), 1)
    d = np.bitwise_count(codes[i] ^ codes[j])
    look = (np.abs(stats[i] - stats[j]) <= LOW_INFORMATION_TOLERANCE).all(axis=1)
    ok = (~low[i] & ~low[j] & (d <= 10)) | (low[i] & low[j] & (d <= 2) & look)
    keys = sub.column("key").to_pylist()
    rep = dedup.link_groups(len(codes), np.stack([i[ok], j[ok]], axis=1), dedup.preference_rank(keys), "star")
    want = {keys[k]: keys[rep[k]] for k in np.flatnonzero(rep != np.arange(len(codes)))}
    assert {r["key"]: r["duplicate_of"] for r in mem.duplicates.to_pylist()} == want
    # without the look check more low-information pairs would link: the check matters on this data
    assert (low[i] & low[j] & (d <= 2) & ~look).sum() >= 10
