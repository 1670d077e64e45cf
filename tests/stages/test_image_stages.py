"""Image stages: integrity, image_filter, exact_dedup, phash_dedup (the map parts and the global runs)."""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from helpers import assert_accounted, input_table
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA
from mmcurate.pipeline.stage import SAMPLE_ID, GlobalStage, MapStage, StageError, registry
from mmcurate.sample_data import build_sample


def jpeg(w: int, h: int, seed: int = 0, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def sample():
    return build_sample()


@pytest.fixture(scope="module")
def table(sample):
    return input_table([(s.key, s.data) for s in sample] + [("no_image", None)])


def reasons_of(result) -> dict:
    return {r["key"]: (r["reason"], r["detail"]) for r in result.rejected.to_pylist()}


# ---------------------------------------------------------------------------------------------------------
# integrity


def test_integrity_statuses_and_columns(table):
    stage = registry.create("integrity", {})
    result = stage.process(table)
    assert_accounted(table, result, "integrity")
    got = reasons_of(result)
    assert {k: v[0] for k, v in got.items()} == {
        "broken_truncated": "truncated",
        "broken_corrupt": "corrupt",
        "broken_empty": "empty",
        "broken_html": "unsupported",
        "no_image": "missing_image",
    }
    assert "truncated" in got["broken_truncated"][1] and "format" in got["broken_html"][1]
    kept = result.kept.to_pydict()
    by_key = {k: i for i, k in enumerate(kept["key"])}
    astro = by_key["astronaut"]
    assert (kept["width"][astro], kept["height"][astro], kept["format"][astro]) == (512, 512, "jpeg")
    assert kept["file_size"][astro] == len(kept["image"][astro])
    assert kept["format"][by_key["astronaut_bright"]] == "png"
    chelsea = Image.open(io.BytesIO(kept["image"][by_key["chelsea"]]))
    assert (kept["width"][by_key["chelsea"]], kept["height"][by_key["chelsea"]]) == chelsea.size
    assert result.kept.schema.field("width").type == pa.int32()


def test_integrity_reports_displayed_size_of_exif_rotated_images(sample):
    rotated = next(s for s in sample if s.key.endswith("_exif6"))
    stored = Image.open(io.BytesIO(rotated.data)).size  # (w, h) as stored
    result = registry.create("integrity", {}).process(input_table([(rotated.key, rotated.data)]))
    row = result.kept.to_pylist()[0]
    assert (row["width"], row["height"]) == (stored[1], stored[0])


def test_integrity_validation_mode_agrees_with_a_full_rgb_decode(sample):
    """The stage decodes JPEGs in luma at 1/8 DCT scale; statuses must equal a full RGB decode's."""
    from mmcurate.ops import decode_images

    rng = np.random.default_rng(1)
    damaged = []
    for s in sample[:40]:
        b = s.data
        damaged.append(b[: int(rng.integers(len(b) // 4, len(b) - 2))])
        flipped = bytearray(b)
        for p in rng.integers(len(b) // 5, len(b) - 2, size=24):
            flipped[p] ^= 0xFF
        damaged.append(bytes(flipped))
    rows = [(f"d{i}", d) for i, d in enumerate(damaged)]
    result = registry.create("integrity", {}).process(input_table(rows))
    reference = decode_images(damaged, mode="RGB", device="cpu").status
    rejected = set(result.rejected.column("key").to_pylist())
    assert rejected == {f"d{i}" for i in np.flatnonzero(reference != 0)}
    assert len(rejected) > 10


def test_integrity_header_only_and_max_pixels(table):
    probe = registry.create("integrity", {"full_decode": False}).process(table)
    assert_accounted(table, probe, "integrity")
    reasons = {k: v[0] for k, v in reasons_of(probe).items()}
    assert "broken_truncated" not in reasons  # its header is intact: only a full decode sees it
    assert reasons["broken_html"] == "unsupported" and reasons["broken_empty"] == "empty"
    for full in (True, False):
        small = registry.create("integrity", {"max_pixels": 300 * 300, "full_decode": full}).process(table)
        got = reasons_of(small)
        assert got["astronaut"][0] == "too_large"
        assert "astronaut" not in small.kept.column("key").to_pylist()


def test_integrity_params_errors_name_the_key():
    with pytest.raises(StageError, match="full_decod.*valid: full_decode, max_pixels, num_threads"):
        registry.create("integrity", {"full_decod": True})
    with pytest.raises(StageError, match="max_pixels"):
        registry.create("integrity", {"max_pixels": -1})
    with pytest.raises(StageError, match="num_threads"):
        registry.create("integrity", {"num_threads": 0})


# ---------------------------------------------------------------------------------------------------------
# image_filter


@pytest.fixture(scope="module")
def sized():
    rows = [
        ("ok_square", jpeg(400, 400)),
        ("narrow", jpeg(120, 300)),
        ("wide_3_5", jpeg(700, 200)),
        ("wide_5", jpeg(1000, 200)),
        ("wide_7", jpeg(1400, 200)),
        ("tall_5", jpeg(200, 1000)),
        ("big", jpeg(900, 600)),
    ]
    return input_table(rows)


def filtered(sized, params, integrity=True):
    batch = registry.create("integrity", {}).process(sized).kept if integrity else sized
    result = registry.create("image_filter", params).process(batch)
    assert_accounted(batch, result, "image_filter")
    return result


def test_image_filter_datacomp_default(sized):
    result = filtered(sized, {})
    got = reasons_of(result)
    assert got["narrow"] == ("min_side", "width 120 < min_side 200")
    assert got["wide_3_5"][0] == "aspect_ratio" and "3.5" in got["wide_3_5"][1] and "max_aspect 3" in got["wide_3_5"][1]
    assert set(got) == {"narrow", "wide_3_5", "wide_5", "wide_7", "tall_5"}
    assert sorted(result.kept.column("key").to_pylist()) == ["big", "ok_square"]


def test_image_filter_cogvlm_preset_and_overrides(sized):
    got = reasons_of(filtered(sized, {"preset": "cogvlm"}))
    assert set(got) == {"wide_7"}  # 1/6 .. 6: 5:1 portrait and landscape pass
    got = reasons_of(filtered(sized, {"preset": "cogvlm", "min_side": 150, "max_side": 1000}))
    assert got["narrow"][0] == "min_side" and got["wide_7"] == ("max_side", "width 1400 > max_side 1000")
    got = reasons_of(filtered(sized, {"max_aspect": 5.0}))  # datacomp min_side kept, aspect overridden
    assert set(got) == {"narrow", "wide_7"}
    got = reasons_of(filtered(sized, {"preset": "none", "min_area": 200_000}))
    assert got["ok_square"] == ("min_area", "area 400x400 = 160000 < min_area 200000")
    assert "wide_7" not in got  # 1400x200 = 280000
    got = reasons_of(filtered(sized, {"preset": "none", "min_aspect": 2.0}))
    assert got["ok_square"][0] == "aspect_ratio" and "< min_aspect 2" in got["ok_square"][1]


def test_image_filter_file_size_bounds(sized):
    sizes = dict(zip(sized.column("key").to_pylist(), (len(b) for b in sized.column("image").to_pylist())))
    limit = sorted(sizes.values())[3]
    got = reasons_of(filtered(sized, {"preset": "none", "max_file_size": limit}))
    assert set(got) == {k for k, v in sizes.items() if v > limit}
    assert all(r == "file_size" and "> max_file_size" in d for r, d in got.values())
    got = reasons_of(filtered(sized, {"preset": "none", "min_file_size": limit}, integrity=False))
    assert set(got) == {k for k, v in sizes.items() if v < limit}


def test_image_filter_probes_sizes_without_integrity(table, sized):
    result = filtered(sized, {}, integrity=False)
    assert set(reasons_of(result)) == {"narrow", "wide_3_5", "wide_5", "wide_7", "tall_5"}
    assert {"width", "height", "format", "file_size"} <= set(result.kept.column_names)
    broken = registry.create("image_filter", {"preset": "none"}).process(table)
    assert_accounted(table, broken, "image_filter")
    reasons = {k: v[0] for k, v in reasons_of(broken).items()}
    assert reasons == {"broken_empty": "empty", "broken_html": "unsupported", "no_image": "missing_image"}


def test_image_filter_params_errors_name_the_key():
    with pytest.raises(StageError, match="'min_size'.*valid: .*min_side"):
        registry.create("image_filter", {"min_size": 100})
    with pytest.raises(StageError, match="preset 'laion'; valid: cogvlm, datacomp, none"):
        registry.create("image_filter", {"preset": "laion"})
    with pytest.raises(StageError, match="min_side .* larger than max_side"):
        registry.create("image_filter", {"min_side": 500, "max_side": 100})
    with pytest.raises(StageError, match="max_aspect.*>= 1"):
        registry.create("image_filter", {"max_aspect": 0.2})
    with pytest.raises(StageError, match="min_area must be a number"):
        registry.create("image_filter", {"min_area": "big"})


# ---------------------------------------------------------------------------------------------------------
# exact_dedup


def metadata_after(stage: GlobalStage, batch: pa.Table) -> pa.Table:
    """What the executor stores for the global phase: the map part's kept rows without image bytes."""
    assert isinstance(stage.map_part, MapStage) and stage.map_part.name == stage.name
    result = stage.map_part.process(batch)
    assert_accounted(batch, result, stage.name)
    return result.kept.drop_columns(["image"])


def check_global(result, table: pa.Table):
    rejected_schema = result.rejected.schema
    if SAMPLE_ID in rejected_schema.names:  # a step written over the context names its rejects' samples
        rejected_schema = rejected_schema.remove(rejected_schema.get_field_index(SAMPLE_ID))
    assert rejected_schema.equals(REJECTS_SCHEMA) and result.duplicates.schema.equals(DUPLICATES_SCHEMA)
    keys = set(table.column("key").to_pylist())
    rejected = result.rejected.column("key").to_pylist()
    assert len(set(rejected)) == len(rejected) and set(rejected) <= keys
    assert result.duplicates.column("key").to_pylist() == rejected
    assert not set(result.duplicates.column("duplicate_of").to_pylist()) & set(rejected)


def test_exact_dedup(table, sample):
    stage = registry.create("exact_dedup", {})
    assert "sha256" in stage.requires
    meta = metadata_after(stage, table)
    assert "no_image" not in meta.column("key").to_pylist()
    digests = dict(zip(meta.column("key").to_pylist(), meta.column("sha256").to_pylist()))
    assert digests["astronaut"] == hashlib.sha256(sample[0].data).hexdigest()
    result = run_on_table(stage, meta)
    check_global(result, meta)
    got = reasons_of(result)
    copies = {s.key: s.source for s in sample if s.label == "exact_duplicate"}
    assert got == {k: ("duplicate_exact", f"duplicate of {src}") for k, src in copies.items()}
    dup = result.duplicates.to_pylist()
    assert {(d["kind"], d["distance"]) for d in dup} == {("exact", 0.0)}
    assert result.stats.duplicates == len(copies) and result.stats.groups == len(copies)


def test_exact_dedup_threaded_hashing_matches_serial():
    blobs = [bytes([i]) * (600_000 + i) for i in range(10)] * 2  # > 4 MiB: hashed on threads
    batch = input_table([(f"k{i}", b) for i, b in enumerate(blobs)])
    meta = registry.create("exact_dedup", {"num_threads": 2}).map_part.process(batch).kept
    assert meta.column("sha256").to_pylist() == [hashlib.sha256(b).hexdigest() for b in blobs]


def test_exact_dedup_keep_by_score_and_order_independence():
    data = jpeg(64, 64)
    keys = ["c", "a", "b", "d"]
    meta = registry.create("exact_dedup", {}).map_part.process(input_table([(k, data) for k in keys])).kept
    meta = meta.append_column("clip_score", pa.array([0.3, 0.1, 0.3, None], pa.float64()))
    first = run_on_table(registry.create("exact_dedup", {}), meta)
    assert sorted(first.rejected.column("key").to_pylist()) == ["b", "c", "d"]  # "a" is first by key
    best = registry.create("exact_dedup", {"keep": {"max": "clip_score"}})
    assert best.requires[-1] == "clip_score"
    assert set(run_on_table(best, meta).duplicates.column("duplicate_of").to_pylist()) == {"b"}  # tie 0.3: b < c
    lowest = run_on_table(registry.create("exact_dedup", {"keep": {"min": "clip_score"}}), meta)
    assert set(lowest.duplicates.column("duplicate_of").to_pylist()) == {"a"}  # null ranks last
    rng = np.random.default_rng(0)
    for _ in range(3):
        shuffled = meta.take(rng.permutation(meta.num_rows))
        assert set(run_on_table(best, shuffled).duplicates.column("duplicate_of").to_pylist()) == {"b"}
    with pytest.raises(StageError, match="input lacks column.*clip_score"):
        run_on_table(best, meta.drop_columns(["clip_score"]))


def test_exact_dedup_params_errors():
    with pytest.raises(StageError, match="keep must be"):
        registry.create("exact_dedup", {"keep": "last"})
    with pytest.raises(StageError, match="keep must be"):
        registry.create("exact_dedup", {"keep": {"best": "score"}})
    with pytest.raises(StageError, match="'max_distance'.*valid: keep, num_threads"):
        registry.create("exact_dedup", {"max_distance": 3})


# ---------------------------------------------------------------------------------------------------------
# phash_dedup


def phash_meta(codes: dict) -> pa.Table:
    return pa.table(
        {"key": list(codes), "source": ["s"] * len(codes), "phash": pa.array(list(codes.values()), pa.uint64())}
    )


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_phash_dedup_on_the_sample(table, sample, mode):
    from mmcurate.ops import phash_bytes

    stage = registry.create("phash_dedup", {"mode": mode})
    meta = metadata_after(stage, table)
    kept = meta.column("key").to_pylist()
    assert not {"broken_truncated", "broken_empty", "broken_html", "no_image"} & set(kept)
    expected = phash_bytes([s.data for s in sample if s.key in kept], exact=mode == "exact").codes
    np.testing.assert_array_equal(meta.column("phash").to_numpy(), expected)
    result = run_on_table(stage, meta)
    check_global(result, meta)
    dups = {d["key"]: d for d in result.duplicates.to_pylist()}
    truth = {s.key: s.source for s in sample if s.label in ("near_duplicate", "exact_duplicate")}
    for key, d in dups.items():  # every link found is a true one ...
        assert truth.get(key) == d["duplicate_of"] and d["kind"] == "phash" and d["distance"] <= 10
    easy = [s.key for s in sample if s.label == "exact_duplicate" or s.key.endswith(("_requal", "_exif6"))]
    assert set(easy) <= set(dups)  # ... and the easy variants are all found
    for r in result.rejected.to_pylist():
        d = dups[r["key"]]
        assert r["reason"] == "duplicate_phash"
        assert r["detail"] == f"duplicate of {d['duplicate_of']} (distance {int(d['distance'])})"


def test_phash_dedup_chain_connected_vs_star():
    codes = {"a": 0, "b": (1 << 6) - 1, "c": (1 << 12) - 1, "z": 2**64 - 1}
    connected = run_on_table(
        registry.create("phash_dedup", {"max_distance": 6, "linkage": "connected"}), phash_meta(codes)
    )
    assert {d["key"]: (d["duplicate_of"], d["distance"]) for d in connected.duplicates.to_pylist()} == {
        "b": ("a", 6.0),
        "c": ("a", 12.0),
    }
    assert connected.stats.max_distance_to_representative == 12
    star = run_on_table(registry.create("phash_dedup", {"max_distance": 6}), phash_meta(codes))  # star by default
    assert reasons_of(star) == {"b": ("duplicate_phash", "duplicate of a (distance 6)")}


def test_phash_dedup_deterministic_and_keep_by_score():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**64, size=40, dtype=np.uint64)
    variants = base[rng.integers(0, 40, size=120)] ^ (np.uint64(1) << rng.integers(0, 64, size=120).astype(np.uint64))
    codes = np.concatenate([base, variants])
    keys = [f"img{i:04d}" for i in rng.permutation(len(codes))]
    meta = phash_meta(dict(zip(keys, codes.tolist())))
    meta = meta.append_column("aesthetic", pa.array(rng.random(len(codes))))
    for params in ({}, {"linkage": "connected"}, {"keep": {"max": "aesthetic"}}):
        stage = registry.create("phash_dedup", params)
        expected = sorted(run_on_table(stage, meta).rejected.column("key").to_pylist())
        assert len(expected) >= 100
        for _ in range(3):
            shuffled = meta.take(rng.permutation(meta.num_rows))
            assert sorted(run_on_table(stage, shuffled).rejected.column("key").to_pylist()) == expected
    scored = run_on_table(registry.create("phash_dedup", {"keep": {"max": "aesthetic"}}), meta)
    score = dict(zip(meta.column("key").to_pylist(), meta.column("aesthetic").to_pylist()))
    for d in scored.duplicates.to_pylist():
        assert score[d["duplicate_of"]] >= score[d["key"]]


def test_phash_dedup_params_errors():
    for params, pattern in (
        ({"max_distance": 65}, "max_distance must be an integer in 0..64"),
        ({"max_distance": True}, "max_distance"),
        ({"mode": "slow"}, "mode must be one of fast, exact"),
        ({"linkage": "single"}, "linkage must be one of connected, star"),
        ({"hash": "dhash"}, "hash must be 'phash'"),
        ({"device": "tpu"}, "device"),
        ({"keep": "newest"}, "keep must be"),
        ({"keypoints": True}, "keypoints: true needs hash: pdq"),
        ({"hash": "pdq", "keypoint_radius": 65}, "keypoint_radius must be an integer in 0..64"),
        ({"threshold": 8}, "'threshold'.*valid: device, dihedral, hash, keep, keypoint_inliers, keypoint_radius, "),
    ):
        with pytest.raises(StageError, match=pattern):
            registry.create("phash_dedup", params)


def test_stages_are_registered_and_picklable():
    assert {"integrity", "image_filter", "exact_dedup", "phash_dedup"} <= set(registry.names())
    for name in ("integrity", "image_filter", "exact_dedup", "phash_dedup"):
        stage = registry.create(name, {})
        clone = pickle.loads(pickle.dumps(stage))
        assert clone.describe() == stage.describe()
        if isinstance(stage, GlobalStage):
            assert clone.map_part.describe() == stage.map_part.describe()
            assert stage.map_part.resources.cpus >= 1


# ---- one decode per image: integrity's fused decode -> pHash feeds phash_dedup ------------------------------
def _sample_batch():
    from mmcurate.sample_data import build_sample

    samples = build_sample(max_photos=3)
    return pa.table(
        {
            "key": [s.key for s in samples],
            "source": ["s"] * len(samples),
            "image": pa.array([s.data for s in samples], pa.binary()),
            "image_ext": ["jpg"] * len(samples),
            "caption": ["a photo of a thing"] * len(samples),
            "meta": ["{}"] * len(samples),
        }
    )


def test_integrity_keeps_the_fast_phash_of_its_decode():
    from mmcurate.ops import phash_bytes

    batch = _sample_batch()
    res = registry.create("integrity", {}).process(batch)
    kept = res.kept
    expected = phash_bytes(kept.column("image").to_pylist(), exact=False, device="cpu")
    assert np.array_equal(kept.column("phash").to_numpy(), expected.codes)
    assert res.rejected.num_rows + kept.num_rows == batch.num_rows and res.rejected.num_rows == 4


def test_phash_dedup_does_not_decode_again_after_integrity(monkeypatch):
    import mmcurate.ops

    kept = registry.create("integrity", {}).process(_sample_batch()).kept
    fast = registry.create("phash_dedup", {}).map_part

    def no_second_decode(*a, **k):
        raise AssertionError("phash_dedup decoded bytes that integrity had already decoded")

    with monkeypatch.context() as m:
        m.setattr(mmcurate.ops, "phash_bytes", no_second_decode)
        out = fast.process(kept)
    assert out.kept.column("phash").equals(kept.column("phash")) and out.rejected.num_rows == 0
    # exact mode is a different hash: it recomputes (and equals the exact kernel)
    exact = registry.create("phash_dedup", {"mode": "exact"}).map_part.process(kept).kept
    expected = mmcurate.ops.phash_bytes(kept.column("image").to_pylist(), exact=True, device="cpu").codes
    assert np.array_equal(exact.column("phash").to_numpy(), expected)


def test_phash_bytes_max_pixels():
    from mmcurate.ops import Status, phash_bytes

    blobs = _sample_batch().column("image").to_pylist()[:2]
    assert (phash_bytes(blobs, exact=False, max_pixels=1000).status == Status.too_large).all()
    assert (phash_bytes(blobs, exact=False, max_pixels=None).status == Status.ok).all()
    with pytest.raises(ValueError, match="max_pixels"):
        phash_bytes(blobs, max_pixels=-1)
