"""clip_embed and clip_score_filter: embedding columns, bookkeeping, parity with load_clip, the score filter's
exactness against brute force, and a recipe run through the real executor. Random weights, tiny model."""

from __future__ import annotations

import io
import math
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import INPUT_SCHEMA
from mmcurate.pipeline.stage import StageError, registry
from mmcurate.stages.embeddings import embeddings_to_numpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}


def _jpeg(w, h, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _corrupt(data: bytes) -> bytes:
    out = bytearray(data)
    mid = len(out) // 2
    out[mid : mid + 1024] = np.random.default_rng(3).integers(0, 256, 1024, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)])


def _mixed_image_batch():
    good = [_jpeg(64 + 8 * i, 48 + 4 * i, i) for i in range(6)]
    png = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(png, "PNG")
    rows = [
        ("g0", good[0], "a red car on a road"),
        ("g1", good[1], None),  # no caption: kept, null text embedding
        ("bad", b"<html><body>403 Forbidden</body></html>", "not an image"),
        ("g2", good[2], "   "),  # blank caption: kept, null text
        ("empty", b"", "empty file"),
        ("g3", good[3], "two dogs playing"),
        ("null", None, "no image member"),
        ("png", png.getvalue(), "a grey square"),
        ("trunc", good[4][: len(good[4]) // 3], "truncated jpeg"),
        ("g5", good[5], "a cat"),
        ("cor", _corrupt(_jpeg(96, 96, 7)), "scrambled scan data"),
    ]
    return pa.table(
        {
            "key": [r[0] for r in rows],
            "source": ["s0"] * len(rows),
            "image": [r[1] for r in rows],
            "image_ext": ["jpg"] * len(rows),
            "caption": [r[2] for r in rows],
            "meta": ["{}"] * len(rows),
        },
        schema=INPUT_SCHEMA,
    )


@pytest.fixture(scope="module")
def stage():
    st = registry.create("clip_embed", dict(TINY))
    st.setup()
    return st


@pytest.fixture(scope="module")
def result(stage):
    return stage.process(_mixed_image_batch())


def test_every_row_kept_or_rejected(result):
    batch = _mixed_image_batch()
    kept = result.kept.column("key").to_pylist()
    rej = dict(zip(result.rejected.column("key").to_pylist(), result.rejected.column("reason").to_pylist()))
    assert sorted(kept + list(rej)) == sorted(batch.column("key").to_pylist())
    assert not set(kept) & set(rej)
    assert kept == ["g0", "g1", "g2", "g3", "png", "g5"]
    assert rej["null"] == "missing_image"
    assert rej["empty"] == "empty"
    assert rej["bad"] == "unsupported"
    assert rej["trunc"] in ("truncated", "corrupt")
    assert rej["cor"] in ("corrupt", "truncated")
    assert set(result.rejected.column("stage").to_pylist()) == {"clip_embed"}
    assert all(d for d in result.rejected.column("detail").to_pylist())


def test_embedding_columns(result):
    t = result.kept
    d = 64
    for name in ("image_embedding", "text_embedding"):
        typ = t.schema.field(name).type
        assert pa.types.is_fixed_size_list(typ) and typ.list_size == d and typ.value_type == pa.float16()
    assert t.schema.field("clip_score").type == pa.float32()
    img = embeddings_to_numpy(t.column("image_embedding"))
    assert np.allclose(np.linalg.norm(img, axis=1), 1.0, atol=2e-3)
    txt = embeddings_to_numpy(t.column("text_embedding"))
    has_text = ~np.isnan(txt).any(axis=1)
    keys = t.column("key").to_pylist()
    assert [k for k, h in zip(keys, has_text) if not h] == ["g1", "g2"]
    assert np.allclose(np.linalg.norm(txt[has_text], axis=1), 1.0, atol=2e-3)
    score = t.column("clip_score").to_numpy(zero_copy_only=False)
    assert np.isnan(score[~has_text]).all()
    cos = (img[has_text] * txt[has_text]).sum(1) / (
        np.linalg.norm(img[has_text], axis=1) * np.linalg.norm(txt[has_text], axis=1)
    )
    np.testing.assert_allclose(score[has_text], cos, atol=3e-3)


def test_parity_with_load_clip(stage, result):
    from mmcurate.models import NativeImageLoader, load_clip

    clip = load_clip("mmcurate-tiny", weights="random", device="cpu", seed=0)
    assert stage.loader.preprocess == clip.preprocess  # the model's own preprocessing
    batch = _mixed_image_batch()
    blobs = [b or b"" for b in batch.column("image").to_pylist()]
    loaded = NativeImageLoader(clip.preprocess).load(blobs)
    ref = clip.embed_images(loaded.pixels).astype(np.float16).astype(np.float32)
    got = embeddings_to_numpy(result.kept.column("image_embedding"))
    np.testing.assert_array_equal(got, ref)
    keys = batch.column("key").to_pylist()
    caps = [batch.column("caption")[int(i)].as_py() for i in loaded.indices]
    with_text = [j for j, c in enumerate(caps) if c and c.strip()]
    ref_t = clip.embed_texts([caps[j] for j in with_text]).astype(np.float16).astype(np.float32)
    got_t = embeddings_to_numpy(result.kept.column("text_embedding"))[with_text]
    np.testing.assert_array_equal(got_t, ref_t)
    assert [keys[int(i)] for i in loaded.indices] == result.kept.column("key").to_pylist()


def test_text_false_and_pickling():
    st = registry.create("clip_embed", dict(TINY, text=False))
    clone = pickle.loads(pickle.dumps(st))  # before setup
    clone.setup()
    after = pickle.loads(pickle.dumps(clone))  # after setup: the model is dropped, not pickled
    assert after.clip is None and clone.clip is not None
    res = clone.process(_mixed_image_batch())
    assert "image_embedding" in res.kept.column_names
    assert "text_embedding" not in res.kept.column_names and "clip_score" not in res.kept.column_names
    assert res.kept.num_rows + res.rejected.num_rows == 11
    assert clone.resources.gpus == 0


def test_clip_embed_param_errors():
    with pytest.raises(StageError, match="no_such"):
        registry.create("clip_embed", {"no_such": 1})
    with pytest.raises(StageError, match="model"):
        registry.create("clip_embed", {"model": "not-a-model"})
    with pytest.raises(StageError, match="device"):
        registry.create("clip_embed", {"device": "tpu"})
    with pytest.raises(StageError, match="num_threads"):
        registry.create("clip_embed", {"num_threads": 0})


def test_missing_weights_is_a_clear_setup_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    st = registry.create("clip_embed", {"model": "mmcurate-tiny", "device": "cpu"})
    with pytest.raises(StageError, match="weights"):
        st.setup()
    st = registry.create(
        "clip_embed", {"model": "mmcurate-tiny", "device": "cpu", "weights": str(tmp_path / "nope.safetensors")}
    )
    with pytest.raises(StageError, match="nope.safetensors"):
        st.setup()


# ---------------------------------------------------------------------------------------------------------
# clip_score_filter


def _scores_table(n=400, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.25, 0.05, n).astype(np.float32)
    if ties:
        scores = np.round(scores, 2).astype(np.float32)  # many exact ties
    valid = rng.random(n) > 0.05
    keys = [f"k{i:04d}" for i in rng.permutation(n)]
    return pa.table({"key": keys, "source": ["s"] * n, "clip_score": pa.array(scores, pa.float32(), mask=~valid)})


def _kept(res, table):
    rej = set(res.rejected.column("key").to_pylist())
    return [k for k in table.column("key").to_pylist() if k not in rej]


def _reasons(res):
    return dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))


def test_threshold_exact():
    t = _scores_table()
    res = run_on_table(registry.create("clip_score_filter", {"threshold": 0.28}), t)
    rows = t.to_pylist()
    expect = sorted(r["key"] for r in rows if r["clip_score"] is not None and r["clip_score"] >= 0.28)
    assert sorted(_kept(res, t)) == expect
    reasons = _reasons(res)
    for r in rows:
        if r["clip_score"] is None:
            assert reasons[r["key"]] == "no_clip_score"
        elif r["key"] not in expect:
            assert reasons[r["key"]] == "clip_score"
    detail = res.rejected.filter(pa.compute.equal(res.rejected.column("reason"), "clip_score"))["detail"][0].as_py()
    assert detail.endswith("< 0.280")
    assert res.stats.kept == len(expect) and res.stats.rejected == t.num_rows - len(expect)
    assert res.stats.cut == 0.28 and "p50" in res.stats.scores


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.01, 1.0])
def test_keep_fraction_exact_and_ties(fraction):
    t = _scores_table()
    res = run_on_table(registry.create("clip_score_filter", {"keep_fraction": fraction}), t)
    scored = [r for r in t.to_pylist() if r["clip_score"] is not None]
    n_keep = math.floor(fraction * len(scored) + 0.5)
    brute = sorted(scored, key=lambda r: (-r["clip_score"], r["key"]))[:n_keep]
    assert sorted(_kept(res, t)) == sorted(r["key"] for r in brute)
    assert res.stats.kept == n_keep
    assert res.stats.cut == pytest.approx(brute[-1]["clip_score"])
    # order independence: the same decision on a shuffled table
    perm = np.random.default_rng(1).permutation(t.num_rows)
    res2 = run_on_table(registry.create("clip_score_filter", {"keep_fraction": fraction}), t.take(perm))
    assert sorted(_kept(res2, t.take(perm))) == sorted(_kept(res, t))
    if fraction < 1.0:
        d = res.rejected.filter(pa.compute.equal(res.rejected.column("reason"), "clip_score"))["detail"][0]
        assert f"top-{fraction * 100:g}% cut" in d.as_py()


def test_keep_fraction_ties_go_to_smaller_key():
    t = pa.table(
        {
            "key": ["d", "b", "a", "c", "e"],
            "source": ["s"] * 5,
            "clip_score": pa.array([0.3, 0.2, 0.2, 0.2, 0.1], pa.float32()),
        }
    )
    res = run_on_table(registry.create("clip_score_filter", {"keep_fraction": 0.4}), t)  # 2 of 5
    assert sorted(_kept(res, t)) == ["a", "d"]


def test_clip_score_filter_param_errors():
    for params in (
        {},
        {"threshold": 0.2, "keep_fraction": 0.3},
        {"keep_fraction": 0},
        {"keep_fraction": 1.5},
        {"threshold": "high"},
        {"threshold": True},
    ):
        with pytest.raises(StageError, match="clip_score_filter"):
            registry.create("clip_score_filter", params)
    with pytest.raises(StageError, match="clip_score"):
        run_on_table(
            registry.create("clip_score_filter", {"threshold": 0.2}), pa.table({"key": ["a"], "source": ["s"]})
        )


# ---------------------------------------------------------------------------------------------------------
# end to end


def test_recipe_end_to_end(tmp_path):
    from mmcurate.io.demo_dataset import build_demo_dataset
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe

    build_demo_dataset(tmp_path / "in", shard_size=40)
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path / "in")
    r["output"]["path"] = str(tmp_path / "out")
    r["output"]["report"] = False
    r["stages"] += [{"clip_embed": dict(TINY)}, {"clip_score_filter": {"keep_fraction": 0.5}}]
    manifest = LocalExecutor(parse_recipe(r), progress=False).run()
    assert manifest["counts"]["accounting_ok"]
    out = tmp_path / "out"
    samples = pq.read_table(out / "samples.parquet")
    assert samples.num_rows > 0
    emb = embeddings_to_numpy(samples.column("image_embedding"))
    assert emb.shape[1] == 64 and not np.isnan(emb).any()
    score = samples.column("clip_score").to_numpy(zero_copy_only=False)
    assert not np.isnan(score).any()
    rejects = pq.read_table(out / "rejects.parquet")
    mine = rejects.filter(pa.compute.equal(rejects.column("stage"), "clip_score_filter"))
    assert mine.num_rows > 0
    assert set(mine.column("reason").to_pylist()) <= {"clip_score", "no_clip_score"}
    # the filter kept the top half of the scored survivors of the map phase
    n_scored = samples.num_rows + mine.filter(pa.compute.equal(mine.column("reason"), "clip_score")).num_rows
    assert samples.num_rows == math.floor(0.5 * n_scored + 0.5)
    assert (
        score.min()
        >= max(float(x.split(" ")[0]) for x in mine.column("detail").to_pylist() if x[0].isdigit() or x[0] == "-")
        - 1e-3
    )
