"""semantic_dedup and balance stages: embedding column handling, equality with curate.semantic_dedup,
representatives that are kept, balance targets and Gini, determinism, and a run through the executor."""

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import unit_rows
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.stage import SAMPLE_ID, MapStage, StageError, StageResult, registry
from mmcurate.stages.embeddings import embedding_matrix

D = 32


def _planted(n=600, seed=0, dup_every=5, noise=0.02):
    """Random unit vectors; every dup_every-th row is a small perturbation of the row before it."""
    rng = np.random.default_rng(seed)
    x = unit_rows(rng.standard_normal((n, D)))
    for i in range(1, n, dup_every):
        x[i] = unit_rows((x[i - 1] + noise * rng.standard_normal(D))[None])[0]
    return x


def _embedding_table(x, fixed=True, dtype=pa.float16(), extra=None):
    n = len(x)
    values = pa.array(np.asarray(x).reshape(-1), type=dtype)
    if fixed:
        col = pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    else:
        col = pa.ListArray.from_arrays(pa.array(np.arange(0, n * x.shape[1] + 1, x.shape[1], dtype=np.int32)), values)
    cols = {"key": [f"k{i:05d}" for i in range(n)], "source": ["s"] * n, "image_embedding": col}
    cols.update(extra or {})
    return pa.table(cols)


def _run_keyed(stage, table):
    """The step over the table (samples named by row number), its per-sample columns given their key too."""
    res = run_on_table(stage, table)
    if res.columns is not None:
        res.columns = res.columns.append_column("key", table.column("key").take(res.columns.column(SAMPLE_ID)))
    return res


def _rejected(res):
    return dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))


def test_embedding_matrix_types_and_bad_rows():
    x = _planted(10, noise=0.5)
    rows = [list(map(float, r)) for r in x]
    rows[2] = None
    rows[3] = [0.0] * D
    rows[4] = rows[4][:5]  # wrong length
    rows[5] = [float("nan")] + rows[5][1:]
    for typ in (pa.list_(pa.float32()), pa.large_list(pa.float16()), pa.list_(pa.float64())):
        m, ok, details = embedding_matrix(pa.chunked_array([pa.array(rows[:6], typ), pa.array(rows[6:], typ)]))
        assert ok.tolist() == [True, True, False, False, False, False, True, True, True, True]
        assert "no image_embedding" in details[2] and "zeros" in details[3] and "length 5" in details[4]
        assert "not finite" in details[5]
        np.testing.assert_allclose(m, x[ok], atol=2e-3)
        np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    fixed = pa.array([r if r is None or len(r) == D else None for r in rows], pa.list_(pa.float16(), D))
    m, ok, _ = embedding_matrix(fixed)
    assert m.shape == (ok.sum(), D) and m.dtype == np.float32
    with pytest.raises(StageError, match="image_embedding"):
        embedding_matrix(pa.array(["a"]), stage="semantic_dedup")


def test_semantic_dedup_equals_curate_and_points_at_kept():
    from mmcurate.curate import semantic_dedup

    x = _planted()
    t = _embedding_table(x)
    res = _run_keyed(registry.create("semantic_dedup", {"n_clusters": 4, "eps": 0.05}), t)
    m, ok, _ = embedding_matrix(t.column("image_embedding"))
    ref = semantic_dedup(m, eps=0.05, n_clusters=4, keep="hard", device="auto", seed=0)
    keys = np.array(t.column("key").to_pylist())
    rej = _rejected(res)
    assert set(rej) == set(keys[~ref.keep]) and set(rej.values()) == {"duplicate_semantic"}
    assert len(rej) >= 100  # the planted pairs are found
    kept = set(keys) - set(rej)
    dups = res.duplicates.to_pydict()
    assert set(dups["key"]) == set(rej) and set(dups["kind"]) == {"semantic"}
    assert set(dups["duplicate_of"]) <= kept  # representatives are kept samples
    index = {k: i for i, k in enumerate(keys)}
    for k, r, dist in zip(dups["key"], dups["duplicate_of"], dups["distance"]):
        assert dist == pytest.approx(1 - float(m[index[k]] @ m[index[r]]), abs=1e-5)
    detail = res.rejected.column("detail").to_pylist()[0]
    assert detail.startswith("cosine 0.9") and " to k" in detail
    cols = res.columns.to_pydict()
    assert set(cols["key"]) == kept and res.columns.schema.field("semantic_cluster").type == pa.int32()
    assert res.stats.clusters == 4 and res.stats.duplicates == len(rej)
    assert "p50" in res.stats.cluster_size_percentiles


def test_semantic_dedup_nulls_keep_by_score_and_default_clusters():
    x = _planted(300)
    score = np.random.default_rng(1).random(300).astype(np.float32)
    t = _embedding_table(x, fixed=False, dtype=pa.float32(), extra={"clip_score": score})
    rows = t.column("image_embedding").to_pylist()
    rows[7] = None
    rows[8] = [0.0] * D
    t = t.set_column(2, "image_embedding", pa.array(rows, pa.list_(pa.float32())))
    stage = registry.create("semantic_dedup", {"keep": {"max": "clip_score"}})
    assert "clip_score" in stage.requires and stage.n_clusters_for(300) == 1 and stage.n_clusters_for(10_400) == 10
    res = _run_keyed(stage, t)
    rej = _rejected(res)
    assert rej["k00007"] == "no_embedding" and rej["k00008"] == "no_embedding"
    assert len(rej) + res.columns.num_rows == t.num_rows  # every row kept or rejected
    # by score: of each planted pair (both present), the higher-scored one survives
    for i in range(11, 300, 5):
        a, b = f"k{i - 1:05d}", f"k{i:05d}"
        if (a in rej) != (b in rej):
            loser = b if b in rej else a
            winner = a if loser == b else b
            assert score[int(winner[1:])] >= score[int(loser[1:])]


@pytest.mark.parametrize(
    "params, bad",
    [
        ({"eps": 1.5}, "eps"),
        ({"keep": "median"}, "keep"),
        ({"keep": {"avg": "s"}}, "keep"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"device": "tpu"}, "device"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_semantic_dedup_param_errors(params, bad):
    with pytest.raises(StageError, match=bad):
        registry.create("semantic_dedup", params)


@pytest.mark.parametrize(
    "params, bad",
    [
        ({}, "exactly one"),
        ({"target": 5, "fraction": 0.5}, "exactly one"),
        ({"fraction": 0}, "fraction"),
        ({"target": -1}, "target"),
        ({"target": 5, "levels": []}, "levels"),
        ({"target": 5, "method": "x"}, "method"),
        ({"target": 5, "strategy": "x"}, "strategy"),
        ({"target": 5, "levels": [10, 0]}, "levels"),
    ],
)
def test_balance_param_errors(params, bad):
    with pytest.raises(StageError, match=bad):
        registry.create("balance", params)


def _skewed(n=2000, seed=0):
    """Gaussian blobs of very different sizes."""
    rng = np.random.default_rng(seed)
    sizes = [max(2, round(s * n / 2000)) for s in (1200, 400, 200, 100, 50, 30, 20)]
    centers = unit_rows(rng.standard_normal((len(sizes), D)))
    x = np.concatenate([c + 0.15 * rng.standard_normal((s, D)) for c, s in zip(centers, sizes)])
    return unit_rows(x[rng.permutation(len(x))])


@pytest.mark.parametrize("method", ["hierarchical", "cap"])
def test_balance_target_gini_and_determinism(method):
    t = _embedding_table(_skewed(1000))
    params = {"target": 250, "levels": [40, 7], "method": method}
    res = _run_keyed(registry.create("balance", params), t)
    assert res.columns.num_rows == 250 and res.rejected.num_rows == t.num_rows - 250
    assert set(res.rejected.column("reason").to_pylist()) == {"balance"}
    assert res.rejected.column("detail").to_pylist()[0].startswith("cluster ")
    assert set(res.columns.column("key").to_pylist()).isdisjoint(res.rejected.column("key").to_pylist())
    s = res.stats
    assert s.after["gini"] < s.before["gini"] and s.after["n_samples"] == 250
    assert s.after["normalized_entropy"] > s.before["normalized_entropy"]
    # the reported top-level clusters are the ones balanced_sample water-filled: every cluster is either
    # taken whole or gets the common cap (or one more)
    m, _, _ = embedding_matrix(t.column("image_embedding"))
    keys = t.column("key").to_pylist()
    chosen = set(res.columns.column("key").to_pylist())
    after = np.bincount(res.columns.column("balance_cluster").to_numpy(), minlength=s.before["n_clusters"])
    picked = np.array([k in chosen for k in keys])
    from mmcurate.curate import balanced_sample

    ref = balanced_sample(m, 250, levels=tuple(s.levels), method=method, seed=0)
    assert picked.nonzero()[0].tolist() == ref.tolist()
    dropped = [int(d.split()[1]) for d in res.rejected.column("detail").to_pylist()]
    before = after + np.bincount(dropped, minlength=after.size)
    assert before.sum() == t.num_rows and (before > 0).all()
    cap = after[after < before].min()
    assert ((after == before) | (after == cap) | (after == cap + 1)).all() and (after[after == before] <= cap + 1).all()
    again = _run_keyed(registry.create("balance", params), t)
    assert again.columns.equals(res.columns)
    other = _run_keyed(registry.create("balance", {**params, "seed": 1}), t)
    assert not other.columns.column("key").equals(res.columns.column("key"))


def test_balance_fraction_everything_and_nulls():
    x = _skewed(400)
    t = _embedding_table(x)
    rows = t.column("image_embedding").to_pylist()
    rows[0] = None
    t = t.set_column(2, "image_embedding", pa.array(rows, t.schema.field("image_embedding").type))
    res = _run_keyed(registry.create("balance", {"fraction": 0.25, "levels": [1000, 100]}), t)
    assert _rejected(res)["k00000"] == "no_embedding"
    assert res.columns.num_rows == round(0.25 * 399)
    assert res.stats.levels[0] <= 399 // 4 and len(res.stats.levels) == 2
    res = _run_keyed(registry.create("balance", {"target": 10_000}), t)
    assert res.columns.num_rows == 399 and res.rejected.num_rows == 1
    assert res.stats.after == res.stats.before


# ---------------------------------------------------------------------------------------------------------
# end to end through the executor, with a fake embedding stage defined here


@registry.register
class _FakeEmbed(MapStage):
    """A deterministic unit vector per image from the sha256 of its bytes (plumbing only); every 7th
    sample gets a null embedding so no_embedding rejects show up downstream."""

    name = "_test_fake_embed"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        dim: int = 16

    def process(self, batch: pa.Table) -> StageResult:
        d = self.params.dim
        vecs = []
        for _key, b in zip(batch.column("key").to_pylist(), batch.column("image").to_pylist()):
            h = hashlib.sha256(b or b"").digest()
            if int.from_bytes(h[:1], "little") % 7 == 0:
                vecs.append(None)
                continue
            v = np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal(d)
            vecs.append((v / np.linalg.norm(v)).astype(np.float16).tolist())
        col = pa.array(vecs, pa.list_(pa.float16(), d))
        return StageResult(batch.append_column("image_embedding", col))


def test_end_to_end_executor(tmp_path):
    from mmcurate.io.demo_dataset import build_demo_dataset
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe

    src = tmp_path / "in"
    build_demo_dataset(src, shard_size=40)
    data = default_recipe_dict()
    data["stages"] += [
        {"_test_fake_embed": {}},
        {"semantic_dedup": {"embedding_column": "image_embedding"}},
        {"balance": {"fraction": 0.5}},
    ]
    data["output"]["report"] = False
    recipe = parse_recipe(data, input_path=str(src), output_path=str(tmp_path / "out"))
    manifest = LocalExecutor(recipe, progress=False).run()
    assert manifest["counts"]["accounting_ok"]
    out = tmp_path / "out"
    rejects = pq.read_table(out / "rejects.parquet").to_pydict()
    by_stage = {}
    for st, reason in zip(rejects["stage"], rejects["reason"]):
        by_stage.setdefault(st, set()).add(reason)
    assert "no_embedding" in by_stage["semantic_dedup"]
    assert by_stage["balance"] == {"balance"}
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["semantic_dedup"]["stats"]["clusters"] >= 1
    bal = stages["balance"]["stats"]
    assert {"before", "after"} <= set(bal) and "gini" in bal["after"]
    samples = pq.read_table(out / "samples.parquet")
    assert samples.num_rows == bal["selected"]
    assert samples.column("semantic_cluster").null_count == 0
    assert samples.column("balance_cluster").null_count == 0
    dups = pq.read_table(out / "duplicates.parquet").to_pydict()
    sem = [k for k, kind in zip(dups["key"], dups["kind"]) if kind == "semantic"]
    assert set(sem) <= {k for k, st in zip(rejects["key"], rejects["stage"]) if st == "semantic_dedup"}
