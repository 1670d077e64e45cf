"""Sharded global mode (issue 5, scale-out): run: {global_mode: sharded} gives memory mode's outputs byte for
byte, through per-shard / per-partition tasks.

Unit level: the sharded exact/phash/semantic steps on random survivor shards with planted duplicates (some
samples removed by an "earlier step", nulls, scores with NaN) equal the in-memory steps table for table and
group like dedup.exact_groups / near_groups with an independent rank; the shard reader, the string hash and
the key check. Recipe level: CLIP (tiny, random weights) embeddings, exact + pHash (+ score keep) + semantic
dedup, clip_score_filter, balance and split, local executor with 1 and 2 workers, and the Ray executor
(marked ray), against memory mode's shards, samples/rejects/duplicates parquet.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers import default_recipe_for, output_digests, run_local, unit_rows
from mmcurate.curate import dedup
from mmcurate.pipeline.global_phase import MemoryGlobalContext
from mmcurate.pipeline.global_sharded import ShardedGlobalContext, id_rows, id_shards, make_ids, string_hash64
from mmcurate.pipeline.stage import SAMPLE_ID, StageError, registry

TINY_CLIP = {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}
D = 24


# ---------------------------------------------------------------------------------------------------------
# random survivor shards


def _flip(code: int, bits: int, rng) -> int:
    for b in rng.choice(64, bits, replace=False):
        code ^= 1 << int(b)
    return code


def _survivors(n=900, n_shards=5, seed=0):
    """One table of n samples with planted exact (sha256), near (pHash within 0..12 bits, chains) and semantic
    (embedding noise) duplicates, nulls and NaN scores, cut into n_shards uneven pieces."""
    rng = np.random.default_rng(seed)
    keys = [f"k{int(v):06d}" for v in rng.permutation(10 * n)[:n]]  # unique, not in row order
    codes, digests, emb = [], [], []
    for i in range(n):
        j = int(rng.integers(i)) if i else 0
        r = rng.random()
        codes.append(
            _flip(codes[j], int(rng.integers(0, 13)), rng)
            if i and r < 0.35
            else int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2))
        )
        digests.append(
            digests[j] if i and rng.random() < 0.2 and digests[j] else hashlib.sha256(rng.bytes(8)).hexdigest()
        )
        emb.append(
            unit_rows(emb[j] + 0.03 * rng.standard_normal(D))
            if i and rng.random() < 0.3
            else unit_rows(rng.standard_normal(D))
        )
    phash = pa.array(codes, pa.uint64()).to_pylist()
    for i in rng.choice(n, 20, replace=False):
        phash[i] = None
    for i in rng.choice(n, 15, replace=False):
        digests[i] = None
    score = rng.random(n)
    score[rng.choice(n, 30, replace=False)] = np.nan
    vecs = [e.astype(np.float16).tolist() for e in emb]
    for i in rng.choice(n, 10, replace=False):
        vecs[i] = None
    for i in rng.choice(n, 4, replace=False):
        vecs[i] = vecs[i][:7] if vecs[i] else None  # wrong length
    table = pa.table(
        {
            "key": keys,
            "source": [f"src{i % 3}" for i in range(n)],
            "sha256": pa.array(digests, pa.string()),
            "phash": pa.array(phash, pa.uint64()),
            "clip_score": pa.array(score, pa.float64()).cast(pa.float32()),
            "image_embedding": pa.array(vecs, pa.list_(pa.float16())),
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, n), n_shards - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _work(tmp_path, shards, missing_shard: int | None = None) -> Path:
    work = tmp_path / "_work"
    (work / "meta").mkdir(parents=True)
    for i, t in enumerate(shards):
        if i != missing_shard:  # a shard whose samples were all rejected in the map phase has no file
            pq.write_table(t, work / "meta" / f"{i:05d}.parquet")
    return work


def _reversed_map(fn, tasks):
    """Runs the tasks last to first, returns results in task order: nothing may depend on execution order."""
    tasks = list(tasks)
    return reversed([fn(t) for t in reversed(tasks)])


def _memory_table(shards, columns, removed_ids=(), missing_shard=None):
    """Memory mode's table: shards concatenated (with their sample ids), minus removed samples."""
    parts = []
    for i, t in enumerate(shards):
        if i == missing_shard:
            continue
        present = [c for c in dict.fromkeys(columns) if c in t.schema.names]  # as the executor reads them
        parts.append(t.select(present).append_column(SAMPLE_ID, pa.array(make_ids(i, np.arange(t.num_rows)))))
    table = pa.concat_tables(parts)
    if len(removed_ids):
        table = table.filter(pc.invert(pc.is_in(table.column(SAMPLE_ID), pa.array(list(removed_ids), pa.int64()))))
    return table


def _check_ids(res, table):
    """The sharded rejects' SAMPLE_ID names the rejected key's sample."""
    ids = table.column(SAMPLE_ID).to_numpy()
    by_key = dict(zip(table.column("key").to_pylist(), ids))
    got = res.rejected.column(SAMPLE_ID).to_numpy()
    assert [by_key[k] for k in res.rejected.column("key").to_pylist()] == got.tolist()


def _setup(tmp_path, map_fn, remove=True, missing_shard=None, seed=0):
    shards = _survivors(seed=seed)
    work = _work(tmp_path, shards, missing_shard)
    ctx = ShardedGlobalContext(work, len(shards), map_fn=map_fn, parallelism=3)
    removed = []
    if remove:  # samples an earlier global step rejected
        rng = np.random.default_rng(1)
        for v in ctx.views():
            removed += make_ids(v.index, rng.choice(v.n_rows, v.n_rows // 10, replace=False)).tolist()
        ctx.remove(np.array(removed))
    return shards, ctx, removed


# ---------------------------------------------------------------------------------------------------------
# exact_dedup / phash_dedup


@pytest.mark.parametrize("keep", ["first", {"max": "clip_score"}, {"min": "clip_score"}])
@pytest.mark.parametrize("map_fn", [map, _reversed_map], ids=["map", "reversed"])
def test_sharded_exact_dedup_equals_memory(tmp_path, keep, map_fn):
    shards, ctx, removed = _setup(tmp_path, map_fn, missing_shard=2)
    stage = registry.create("exact_dedup", {"keep": keep})
    table = _memory_table(shards, list(stage.requires), removed, missing_shard=2)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # one partition, in process
    sh = stage.run(ctx)  # N partitions, tasks in any order
    assert sh.rejected.equals(mem.rejected)
    assert sh.duplicates.equals(mem.duplicates)
    assert mem.rejected.num_rows >= 50  # planted exact copies found
    _check_ids(sh, table)
    for k in ("samples", "duplicates", "groups", "without_hash"):
        assert getattr(sh.stats, k) == getattr(mem.stats, k), k
    # the grouping is exact_groups' with dedup.preference_rank (an independent rank implementation)
    valid = table.column("sha256").is_valid().to_numpy(zero_copy_only=False)
    sub = table.filter(pa.array(valid))
    keys = sub.column("key").to_pylist()
    col = keep if keep == "first" else next(iter(keep.values()))
    rank = dedup.preference_rank(
        keys,
        None if keep == "first" else sub.column(col).to_numpy(zero_copy_only=False),
        prefer="max" if keep == "first" else next(iter(keep)),
    )
    g = dedup.exact_groups(np.array(sub.column("sha256").to_pylist()), rank)
    d = np.flatnonzero(g.is_duplicate)
    expect = {keys[i]: keys[g.representative[i]] for i in d}
    got = sh.duplicates.to_pydict()
    assert dict(zip(got["key"], got["duplicate_of"])) == expect


@pytest.mark.parametrize("linkage", ["star", "connected"])
@pytest.mark.parametrize("keep", ["first", {"max": "clip_score"}])
@pytest.mark.parametrize("map_fn", [map, _reversed_map], ids=["map", "reversed"])
def test_sharded_phash_dedup_equals_memory(tmp_path, linkage, keep, map_fn):
    shards, ctx, removed = _setup(tmp_path, map_fn)
    stage = registry.create("phash_dedup", {"keep": keep, "linkage": linkage, "max_distance": 10})
    table = _memory_table(shards, list(stage.requires), removed)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # every sample a candidate, one grouping
    sh = stage.run(ctx)  # linked samples from the pigeonhole join
    assert sh.rejected.equals(mem.rejected)
    assert sh.duplicates.equals(mem.duplicates)
    assert mem.rejected.num_rows >= 100
    _check_ids(sh, table)
    for k in ("samples", "duplicates", "groups", "without_hash", "max_distance_to_representative"):
        assert getattr(sh.stats, k) == getattr(mem.stats, k), k
    assert sh.stats.linked < table.num_rows  # the driver fetched the linked samples only
    # near_groups over all codes with dedup.preference_rank
    valid = table.column("phash").is_valid().to_numpy(zero_copy_only=False)
    sub = table.filter(pa.array(valid))
    keys = sub.column("key").to_pylist()
    rank = dedup.preference_rank(
        keys, None if keep == "first" else sub.column("clip_score").to_numpy(zero_copy_only=False)
    )
    g = dedup.near_groups(sub.column("phash").to_numpy(), 10, rank, linkage=linkage, device="cpu")
    d = np.flatnonzero(g.is_duplicate)
    got = dict(
        zip(
            sh.duplicates.column("key").to_pylist(),
            zip(sh.duplicates.column("duplicate_of").to_pylist(), sh.duplicates.column("distance").to_pylist()),
        )
    )
    assert got == {keys[i]: (keys[g.representative[i]], float(g.distance[i])) for i in d}
    if linkage == "connected":
        assert max(g.distance) > 10  # chains were planted


def test_phash_max_distance_64_links_every_sample(tmp_path):
    """Pigeonhole partitioning cannot split a 64-bit radius (every pair is within it): every sample with a
    pHash is a candidate, and the result is the one-partition result."""
    shards, ctx, _ = _setup(tmp_path, map, remove=False)
    stage = registry.create("phash_dedup", {"max_distance": 64})
    sh = stage.run(ctx)
    mem = stage.run(MemoryGlobalContext.from_table(_memory_table(shards, list(stage.requires))))
    assert sh.rejected.equals(mem.rejected) and sh.duplicates.equals(mem.duplicates)
    assert sh.stats.groups == 1 and sh.stats.duplicates == sh.stats.samples - sh.stats.without_hash - 1


# ---------------------------------------------------------------------------------------------------------
# semantic_dedup


@pytest.mark.parametrize(
    "params, chunk_rows",
    [
        ({"keep": "hard"}, None),
        ({"keep": "hard"}, 37),  # several assignment chunks per shard, some under faiss's BLAS threshold
        ({"keep": "random", "seed": 3}, None),
        ({"keep": {"max": "clip_score"}, "sample_size": 200}, 37),
        ({"keep": "easy", "sample_size": 60, "n_clusters": 9}, None),
    ],
)
def test_sharded_semantic_dedup_equals_memory(tmp_path, monkeypatch, params, chunk_rows):
    if chunk_rows:
        import mmcurate.curate.semantic_stream as ss

        monkeypatch.setattr(ss, "DEFAULT_CHUNK_ROWS", chunk_rows)
    shards, ctx, removed = _setup(tmp_path, _reversed_map)
    stage = registry.create("semantic_dedup", {"eps": 0.05, "n_clusters": 6, "device": "cpu", **params})
    table = _memory_table(shards, list(stage.requires), removed)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # one partition, rows in RAM, in process
    sh = stage.run(ctx)  # shards spilled under _work/, tasks in reverse order
    assert sh.rejected.equals(mem.rejected)
    assert sh.duplicates.equals(mem.duplicates)
    assert sh.columns.equals(mem.columns)
    reasons = pc.value_counts(mem.rejected.column("reason")).to_pylist()
    assert {r["values"] for r in reasons} == {"no_embedding", "duplicate_semantic"}
    assert mem.rejected.num_rows >= 100
    _check_ids(sh, table)
    for k in ("no_embedding", "clusters", "sample_size", "duplicates", "kept", "cluster_size_percentiles"):
        assert getattr(sh.stats, k) == getattr(mem.stats, k), k
    assert mem.stats.partitions["spill_bytes"] == 0 < sh.stats.partitions["spill_bytes"]


def test_semantic_sample_size_validation():
    with pytest.raises(StageError, match="sample_size"):
        registry.create("semantic_dedup", {"sample_size": 0})
    st = registry.create("semantic_dedup", {"sample_size": 50, "n_clusters": 80})
    assert st.sizes_for(1000) == (50, 50) and st.sizes_for(30) == (30, 30)
    # default: 256 training points per cluster (faiss's cap), all of them when there are fewer
    assert registry.create("semantic_dedup", {}).sizes_for(12_000) == (12, 3072)
    assert registry.create("semantic_dedup", {"n_clusters": 100}).sizes_for(12_000) == (100, 12_000)


# ---------------------------------------------------------------------------------------------------------
# the context


def test_shard_view_reads_survivors_added_columns_and_nulls(tmp_path):
    a = pa.table({"key": ["a0", "a1", "a2", "a3"], "source": ["s"] * 4, "x": pa.array([1, 2, 3, 4], pa.int32())})
    b = pa.table({"key": ["b0", "b1"], "source": ["t"] * 2})  # no column x
    work = _work(tmp_path, [a, b])
    ctx = ShardedGlobalContext(work, 2)
    ctx.remove(make_ids(0, [1]))
    ctx.add_columns("step1", pa.table({"c": pa.array([10, 30], pa.int64()), SAMPLE_ID: make_ids(0, [2, 0])}))
    views = {v.index: v for v in ctx.views()}
    t = views[0].read(["c", "key", "x"])
    assert t.column_names == ["c", "key", "x", SAMPLE_ID]
    assert t.to_pydict() == {
        "c": [30, 10, None],
        "key": ["a0", "a2", "a3"],
        "x": [1, 3, 4],
        SAMPLE_ID: make_ids(0, [0, 2, 3]).tolist(),
    }
    t = views[1].read(["x", "c"])
    assert t.column("x").type == pa.int32() and t.column("x").null_count == 2 and t.column("c").null_count == 2
    assert ctx.n_alive == 5 and "c" in ctx.column_names
    got = ctx.fetch(make_ids(1, [1]).tolist() + make_ids(0, [3]).tolist(), ["key"])
    assert got.column("key").to_pylist() == ["a3", "b1"]
    with pytest.raises(Exception, match="not survivors"):
        ctx.remove(make_ids(0, [1]))  # already removed
    with pytest.raises(StageError, match="not"):
        ctx.fetch(make_ids(0, [1]), ["key"])
    # the write phase's join of the added columns, by row
    meta = pq.read_table(work / "meta" / "00000.parquet").take([0, 3])
    joined = ctx.added_columns().join(0, meta, np.array([0, 3]))
    assert joined.column("c").to_pylist() == [30, None]
    assert id_shards(make_ids(7, [5])).tolist() == [7] and id_rows(make_ids(7, [5])).tolist() == [5]


def test_repeated_keys_across_shards_are_an_error(tmp_path):
    shards = [pa.table({"key": ["a", "b"], "source": ["s1"] * 2}), pa.table({"key": ["c", "a"], "source": ["s2"] * 2})]
    ctx = ShardedGlobalContext(_work(tmp_path, shards), 2, parallelism=4)
    with pytest.raises(StageError, match=r"keys repeat.*'a'"):
        ctx.check_unique_keys()
    ShardedGlobalContext(_work(tmp_path / "ok", shards[:1]), 1).check_unique_keys()


def test_string_hash64_is_by_value():
    values = ["", "a", "b", "ab", "ba", "a" * 100, "k000001", "k000010", "ü", None]
    h = string_hash64(pa.array(values))
    assert len(set(h[:-1].tolist())) == len(values) - 1  # distinct values, distinct hashes
    assert h[-1] == h[0]  # null hashes as ""
    chunked = pa.chunked_array([pa.array(values[:3]), pa.array(values[3:])])
    np.testing.assert_array_equal(string_hash64(chunked), h)
    np.testing.assert_array_equal(string_hash64(pa.array(values, pa.large_string())), h)
    np.testing.assert_array_equal(string_hash64(pa.array(values).slice(4, 3)), h[4:7])
    many = string_hash64(pa.array([f"key{i}" for i in range(200_000)]))  # several internal pieces
    assert np.unique(many).size == many.size
    assert np.bincount((many % np.uint64(16)).astype(int)).min() > 200_000 / 16 * 0.9


def test_recipe_global_mode(tmp_path):
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe

    r = default_recipe_dict()
    r["input"]["path"] = "x"
    assert parse_recipe(r).global_mode == "auto"  # each executor decides: local memory, Ray sharded
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.ray_executor import RayExecutor

    assert LocalExecutor.AUTO_GLOBAL_MODE == "memory" and RayExecutor.AUTO_GLOBAL_MODE == "sharded"
    assert LocalExecutor(parse_recipe(r)).global_mode == "memory"
    r["run"]["global_mode"] = "sharded"
    rec = parse_recipe(r)
    assert rec.global_mode == "sharded" and rec.to_dict()["run"]["global_mode"] == "sharded"
    assert parse_recipe(r, global_mode="memory").global_mode == "memory"
    r["run"]["global_mode"] = "distributed"
    with pytest.raises(StageError, match="global_mode.*auto, memory, sharded"):
        parse_recipe(r)


# ---------------------------------------------------------------------------------------------------------
# recipes end to end


RECIPES = {
    # score keep policies, star linkage, semantic over every sample, split stratified by its clusters
    "scores": [
        {"clip_embed": TINY_CLIP},
        {"exact_dedup": {"keep": {"max": "clip_score"}}},
        {"phash_dedup": {"keep": {"max": "clip_score"}, "max_distance": 12}},
        {"semantic_dedup": {"eps": 0.2, "n_clusters": 3}},
        {"split": {"ratios": [0.6, 0.2, 0.2], "stratify_by": "semantic_cluster"}},
    ],
    # connected linkage, a score filter and balance (in memory) between, semantic keep by score on a sample
    "mixed": [
        {"clip_embed": TINY_CLIP},
        {"exact_dedup": {}},
        {"phash_dedup": {"linkage": "connected", "keep": {"min": "file_size"}}},
        {"clip_score_filter": {"keep_fraction": 0.95}},
        {"semantic_dedup": {"eps": 0.15, "n_clusters": 4, "keep": {"max": "clip_score"}, "sample_size": 30}},
        {"balance": {"fraction": 0.8, "levels": [4]}},
        {"split": {"ratios": [0.6, 0.2, 0.2], "group_columns": ["balance_cluster"]}},
    ],
    # balance by target, closest to the centroids, two levels with a small k-means sample
    "balance_closest": [
        {"clip_embed": TINY_CLIP},
        {"balance": {"target": 40, "levels": [8, 3], "strategy": "closest", "sample_size": 30}},
        {"split": {"ratios": [0.8, 0.1, 0.1], "stratify_by": "balance_cluster"}},
    ],
    # a flat per-cluster cap by fraction
    "balance_cap": [
        {"clip_embed": TINY_CLIP},
        {"exact_dedup": {}},
        {"balance": {"fraction": 0.6, "levels": [6], "method": "cap", "seed": 3}},
        {"split": {"ratios": [0.7, 0.2, 0.1], "group_columns": ["balance_cluster"]}},
    ],
    # no dedup before the score cut, so duplicates' equal scores tie at it (0.26: a cut inside a tie);
    # split with a fixed radius, a group column and strata
    "clip_ties": [
        {"clip_embed": TINY_CLIP},
        {"clip_score_filter": {"keep_fraction": 0.26}},
        {
            "split": {
                "ratios": [0.6, 0.2, 0.2],
                "phash_radius": 20,
                "group_columns": ["source"],
                "stratify_by": "source",
                "seed": 2,
            }
        },
    ],
    "clip_threshold": [
        {"clip_embed": TINY_CLIP},
        {"clip_score_filter": {"threshold": 0.0}},
        {"split": {"ratios": [0.5, 0.3, 0.2], "phash_radius": 8, "stratify_by": "source"}},
    ],
}


def _named_recipe(demo_input: Path, out: Path, stages: str, mode: str, workers: int = 1) -> dict:
    """The default recipe less its exact and pHash dedup steps, plus RECIPES[stages]; global_mode mode, no report."""
    r = default_recipe_for(demo_input, out, batch_size=16, workers=workers, global_mode=mode)
    r["output"]["report"] = False
    r["stages"] = [s for s in r["stages"] if not {"exact_dedup", "phash_dedup"} & set(s)] + RECIPES[stages]
    return r


@pytest.fixture(scope="module")
def memory_runs(demo_input, tmp_path_factory) -> dict:
    outs = {}
    for name in RECIPES:
        out = tmp_path_factory.mktemp("memory") / name
        run_local(_named_recipe(demo_input, out, name, "memory"))
        outs[name] = out
    return outs


def _same_outputs(out: Path, ref: Path, manifest: dict):
    files, ref_files = output_digests(out), output_digests(ref)
    assert {"samples.parquet", "rejects.parquet", "duplicates.parquet"} <= set(files)
    assert any(f.startswith("shards/train/") for f in files)
    assert files == ref_files
    ref_manifest = json.loads((ref / "manifest.json").read_text())
    assert manifest["counts"] == ref_manifest["counts"] and manifest["counts"]["accounting_ok"]
    assert manifest["outputs"] == ref_manifest["outputs"]
    for a, b in zip(manifest["stages"], ref_manifest["stages"]):
        assert {k: a[k] for k in ("name", "in", "kept", "rejected", "reasons")} == {
            k: b[k] for k in ("name", "in", "kept", "rejected", "reasons")
        }
    assert not (out / "_work").exists()


@pytest.mark.parametrize("name, workers", [("scores", 1), ("scores", 2), ("mixed", 1)])
def test_recipe_sharded_equals_memory(demo_input, memory_runs, tmp_path, name, workers):
    out = tmp_path / "sharded"
    manifest = run_local(_named_recipe(demo_input, out, name, "sharded", workers))
    _same_outputs(out, memory_runs[name], manifest)
    modes = {s["name"]: s["mode"] for s in manifest["stages"] if s["kind"] == "global"}
    assert modes == {
        "exact_dedup": "sharded",
        "phash_dedup": "sharded",
        "semantic_dedup": "sharded",
        "split": "sharded",
        **({"clip_score_filter": "sharded", "balance": "sharded"} if name == "mixed" else {}),
    }
    ref = json.loads((memory_runs[name] / "manifest.json").read_text())
    assert {s["mode"] for s in ref["stages"] if s["kind"] == "global"} == {"memory"}
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["semantic_dedup"]["reasons"].get("duplicate_semantic", 0) > 0
    assert stages["phash_dedup"]["rejected"] > 0 and stages["exact_dedup"]["rejected"] > 0
    assert stages["semantic_dedup"]["stats"]["partitions"]["n_partitions"] >= 1
    ref_stages = {s["name"]: s for s in ref["stages"]}
    for k in ("max_distance", "linkage", "mode", "expected_chance_links_per_sample"):  # same settings stats
        assert stages["phash_dedup"]["stats"][k] == ref_stages["phash_dedup"]["stats"][k], k


@pytest.mark.parametrize("name, workers", [("balance_closest", 1), ("balance_closest", 2), ("balance_cap", 2)])
def test_recipe_sharded_balance_equals_memory(demo_input, memory_runs, tmp_path, name, workers):
    out = tmp_path / "sharded"
    manifest = run_local(_named_recipe(demo_input, out, name, "sharded", workers))
    _same_outputs(out, memory_runs[name], manifest)
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["balance"]["mode"] == "sharded" and stages["balance"]["reasons"].get("balance", 0) > 0
    ref = {s["name"]: s for s in json.loads((memory_runs[name] / "manifest.json").read_text())["stages"]}
    for k in ("selected", "levels", "sample_size", "before", "after"):
        assert stages["balance"]["stats"][k] == ref["balance"]["stats"][k], k


def _without_seconds(stats):
    return {k: v for k, v in stats.items() if k != "seconds"}


@pytest.mark.parametrize(
    "name, workers", [("clip_ties", 1), ("clip_ties", 2), ("clip_threshold", 1), ("clip_threshold", 2)]
)
def test_recipe_sharded_clip_filter_and_split_equal_memory(demo_input, memory_runs, tmp_path, name, workers):
    out = tmp_path / "sharded"
    manifest = run_local(_named_recipe(demo_input, out, name, "sharded", workers))
    _same_outputs(out, memory_runs[name], manifest)
    stages = {s["name"]: s for s in manifest["stages"]}
    ref = {s["name"]: s for s in json.loads((memory_runs[name] / "manifest.json").read_text())["stages"]}
    for step in ("clip_score_filter", "split"):
        assert stages[step]["mode"] == "sharded" and ref[step]["mode"] == "memory"
        assert _without_seconds(stages[step]["stats"]) == _without_seconds(ref[step]["stats"]), step
    clip = stages["clip_score_filter"]
    assert 0 < clip["rejected"] < clip["in"]
    assert stages["split"]["stats"]["phash_links"] > 0 or name == "clip_threshold"
    if name == "clip_ties":  # equal scores (duplicates: no dedup ran) straddle the keep_fraction cut
        details = pq.read_table(out / "rejects.parquet").column("detail").to_pylist()
        assert any("tie at the cut" in (d or "") for d in details)


def test_cli_global_mode_flag(demo_input, tmp_path):
    import yaml

    from mmcurate.cli import main

    r = _named_recipe(demo_input, tmp_path / "out", "scores", "memory")
    r["stages"] = [s for s in r["stages"] if "clip_embed" not in s and "semantic_dedup" not in s and "split" not in s]
    r["stages"][-2:] = [{"exact_dedup": {}}, {"phash_dedup": {}}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    assert main(["run", str(path), "--global-mode", "sharded"]) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["run"]["recipe"]["run"]["global_mode"] == "sharded"
    assert {s["name"]: s["mode"] for s in m["stages"] if s["kind"] == "global"} == {
        "exact_dedup": "sharded",
        "phash_dedup": "sharded",
    }


@pytest.mark.ray
def test_ray_sharded_equals_local_memory(demo_input, memory_runs, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import ray

    from mmcurate.pipeline.ray_executor import RayExecutor, init_ray
    from mmcurate.pipeline.recipe import parse_recipe

    started = init_ray(num_cpus=2)
    try:
        out = tmp_path / "ray"
        manifest = RayExecutor(parse_recipe(_named_recipe(demo_input, out, "scores", "sharded")), progress=False).run()
    finally:
        if started:
            ray.shutdown()
    _same_outputs(out, memory_runs["scores"], manifest)
    assert manifest["run"]["executor"] == "ray"
    assert {s["name"]: s["mode"] for s in manifest["stages"] if s["kind"] == "global"}["semantic_dedup"] == "sharded"


# ---------------------------------------------------------------------------------------------------------
# balance


@pytest.mark.parametrize(
    "params, chunk_rows",
    [
        ({"fraction": 0.5, "levels": [12, 4]}, None),
        ({"fraction": 0.3, "levels": [12, 4], "strategy": "closest", "seed": 2}, 37),  # several chunks per shard
        ({"target": 300, "levels": [10], "method": "cap"}, None),
        ({"target": 200, "levels": [10], "method": "cap", "strategy": "closest"}, 37),
        ({"target": 250, "levels": [16, 5], "sample_size": 60}, None),  # refits capped at 60 rows
    ],
)
def test_sharded_balance_equals_memory(tmp_path, monkeypatch, params, chunk_rows):
    if chunk_rows:
        import mmcurate.curate.semantic_stream as ss

        monkeypatch.setattr(ss, "DEFAULT_CHUNK_ROWS", chunk_rows)
    shards, ctx, removed = _setup(tmp_path, _reversed_map)
    stage = registry.create("balance", {"device": "cpu", **params})
    table = _memory_table(shards, list(stage.requires), removed)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # one partition, rows in RAM, in process
    sh = stage.run(ctx)  # .npy shards under _work/, tasks in reverse order
    assert sh.rejected.equals(mem.rejected)
    assert {r["values"] for r in pc.value_counts(mem.rejected.column("reason")).to_pylist()} == {
        "no_embedding",
        "balance",
    }
    _check_ids(sh, table)
    assert sh.columns.equals(mem.columns)
    assert mem.columns.num_rows == mem.stats.target > 0
    for k in ("no_embedding", "n", "target", "selected", "levels", "sample_size", "before", "after"):
        assert getattr(sh.stats, k) == getattr(mem.stats, k), k
    if "sample_size" in params:
        assert sh.stats.partitions["largest_gather_rows"] <= params["sample_size"]


def test_balance_data_level_same_over_memory_and_shards(tmp_path):
    """data_level_kmeans over the rows as one array in memory and as .npy shards read by tasks in reverse order:
    identical centroids, labels and distances when the shards' chunks are the same; the sharded source gathers
    at most sample_size rows at a time."""
    from mmcurate.curate.balance import ShardEmbeddings, data_level_kmeans
    from mmcurate.curate.semantic_stream import EmbeddingShard
    from mmcurate.pipeline.global_sharded import make_ids

    rng = np.random.default_rng(5)
    centers = unit_rows(rng.standard_normal((9, D)))
    sizes = [700, 300, 150, 90, 60, 40, 30, 20, 10]
    x = unit_rows(np.concatenate([c + 0.2 * rng.standard_normal((s, D)) for c, s in zip(centers, sizes)]))
    x = x[rng.permutation(len(x))]
    cuts = [0, 333, 334, 900, 1400]
    ids = np.concatenate(
        [
            make_ids(i, np.sort(rng.choice(10_000, b - a, replace=False)))
            for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))
        ]
    )
    in_ram, on_disk = [], []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        np.save(tmp_path / f"{i}.npy", x[a:b])
        on_disk.append(EmbeddingShard.from_npy(tmp_path / f"{i}.npy", ids[a:b]))
        in_ram.append(EmbeddingShard.from_array(x[a:b], ids[a:b]))
    mem = ShardEmbeddings(in_ram, ids)
    sharded = ShardEmbeddings(on_disk, ids, _reversed_map, 16384)
    for kw, most in (
        ({"k": 12, "n_resamples": 3, "sample_size": 96}, 96),
        ({"k": 7, "n_resamples": 2, "sample_size": None}, 1400),  # 256 per cluster: all rows
        ({"k": 12, "n_resamples": 0, "sample_size": 500}, 500),
    ):
        sharded.gathered_rows = 0
        a = data_level_kmeans(mem, device="cpu", seed=3, **kw)
        b = data_level_kmeans(sharded, device="cpu", seed=3, **kw)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
        assert np.bincount(a[1]).size == kw["k"] and sharded.gathered_rows == most


def test_sharded_balance_never_builds_the_embedding_matrix(tmp_path, monkeypatch):
    """The driver's k-means trains on at most sample_size rows and every embedding_matrix call (in the per-shard
    tasks) converts one shard, never all survivors at once."""
    import mmcurate.index as mindex
    import mmcurate.stages.embeddings as sem

    shards, ctx, removed = _setup(tmp_path, map)
    trained, converted = [], []
    real_kmeans, real_matrix = mindex.kmeans, sem.embedding_matrix

    def kmeans_spy(x, k, *a, **kw):
        trained.append(int(x.shape[0]))
        return real_kmeans(x, k, *a, **kw)

    def matrix_spy(column, *a, **kw):
        out = real_matrix(column, *a, **kw)
        converted.append(int(out[0].shape[0]))
        return out

    monkeypatch.setattr(mindex, "kmeans", kmeans_spy)
    monkeypatch.setattr(sem, "embedding_matrix", matrix_spy)
    stage = registry.create("balance", {"fraction": 0.5, "levels": [10, 3], "sample_size": 40, "device": "cpu"})
    res = stage.run(ctx)
    n = res.stats.n
    assert n > 600 and res.columns.num_rows == round(0.5 * n)
    # data level: the sample and the refits (<= 40 rows); upper levels: the 10 centroids and their subsets
    assert trained and max(trained) <= 40 and trained.count(40) >= 1
    assert converted and max(converted) <= max(v.n_alive for v in ctx.views()) < n
    assert res.stats.partitions["largest_gather_rows"] <= 40


# ---------------------------------------------------------------------------------------------------------
# clip_score_filter


def _no_whole_columns(*args, **kwargs):
    raise AssertionError("the sharded step gathered a column of the survivors on the driver")


def _tied_scores(shards, seed=0):
    """Scores with many ties (a few distinct values), NaN and nulls, so a keep_fraction cut falls in a tie."""
    rng = np.random.default_rng(seed)
    out = []
    for t in shards:
        s = rng.choice([0.1, 0.25, 0.3, 0.3001, -0.0, 0.0], t.num_rows).astype(np.float32)
        s[rng.random(t.num_rows) < 0.05] = np.nan
        arr = pa.array(s, pa.float32(), mask=rng.random(t.num_rows) < 0.05)
        out.append(t.set_column(t.schema.get_field_index("clip_score"), "clip_score", arr))
    return out


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": 0.25},
        {"threshold": -1.0},
        {"keep_fraction": 0.37},
        {"keep_fraction": 0.5},
        {"keep_fraction": 1.0},
        {"keep_fraction": 0.001},
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_sharded_clip_score_filter_equals_memory(tmp_path, params, ties):
    shards = _survivors()
    if ties:
        shards = _tied_scores(shards)
    work = _work(tmp_path, shards, missing_shard=1)
    ctx = ShardedGlobalContext(work, len(shards), map_fn=_reversed_map, parallelism=3)
    rng = np.random.default_rng(2)
    removed = []
    for v in ctx.views():
        removed += make_ids(v.index, rng.choice(v.n_rows, v.n_rows // 10, replace=False)).tolist()
    ctx.remove(np.array(removed))
    stage = registry.create("clip_score_filter", params)
    table = _memory_table(shards, list(stage.requires), removed, missing_shard=1)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # one partition, in process
    fetched = []
    fetch = ctx.fetch
    ctx.fetch = lambda ids, columns: fetched.append((len(ids), columns)) or fetch(ids, columns)
    ctx.load = _no_whole_columns
    res = stage.run(ctx)  # N partitions, tasks in reverse order
    assert all(columns == ["key"] for _, columns in fetched)
    assert sum(n for n, _ in fetched) < len(table) // 3  # keys of the samples tied at the cut only
    assert res.rejected.equals(mem.rejected)
    _check_ids(res, table)
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(res.stats) == strip(mem.stats)
    if ties and "keep_fraction" in params and params["keep_fraction"] < 1:
        details = res.rejected.column("detail").to_pylist()
        assert params["keep_fraction"] == 0.001 or any("tie at the cut" in d for d in details)


def test_keep_fraction_cut_fetches_only_tied_keys():
    from mmcurate.stages.clip import keep_fraction_cut

    ids = np.array([3, 5, 8, 13, 21, 34], np.int64)
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5, 0.9])
    keys = {3: "é", 5: "b", 8: "a", 13: "z", 21: "ab", 34: "c"}
    asked = []

    def fetch(some):
        asked.append(some.tolist())
        return pa.array([keys[i] for i in some.tolist()])

    kept, cut = keep_fraction_cut(ids, scores, 4, fetch)
    assert asked == [[3, 8, 21]]  # only the samples at the cut score
    assert kept.tolist() == [5, 8, 21, 34] and cut == 0.5  # ties by key: "a", "ab" before "é"
    none, cut = keep_fraction_cut(ids, scores, 0, fetch)
    assert none.size == 0 and cut is None


# ---------------------------------------------------------------------------------------------------------
# split


@pytest.mark.parametrize(
    "params",
    [
        {},  # phash_radius auto
        {"phash_radius": 12, "stratify_by": "source", "seed": 3},
        {"phash_radius": None, "group_columns": ["sha256"], "stratify_by": "sha256"},
        {"phash_radius": 4, "group_columns": ["source", "phash"], "ratios": [0.5, 0.5, 0.0]},
        {"phash_radius": 0, "group_columns": ["sha256", "phash"], "stratify_by": "phash"},
        {"phash_radius": None, "group_columns": ["clip_score"], "stratify_by": "clip_score"},  # floats, NaN
    ],
)
@pytest.mark.parametrize("map_fn", [map, _reversed_map], ids=["map", "reversed"])
def test_sharded_split_equals_memory(tmp_path, params, map_fn):
    shards, ctx, removed = _setup(tmp_path, map_fn, missing_shard=3)
    stage = registry.create("split", params)
    table = _memory_table(shards, [*stage.requires, *stage.reads_if_present], removed, missing_shard=3)
    mem = stage.run(MemoryGlobalContext.from_table(table))  # one partition, in process
    ctx.load = ctx.fetch = _no_whole_columns  # the driver never gathers keys (or any column) of samples
    res = stage.run(ctx)
    assert res.columns.column(SAMPLE_ID).to_pylist() == table.column(SAMPLE_ID).to_pylist()
    assert res.columns.equals(mem.columns)
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "seconds"}  # noqa: E731
    assert strip(res.stats) == strip(mem.stats)
    assert res.rejected.num_rows == 0


def test_split_phash_radius_64_links_every_sample(tmp_path):
    shards, ctx, _ = _setup(tmp_path, map, remove=False)
    stage = registry.create("split", {"phash_radius": 64})
    res = stage.run(ctx)
    mem = stage.run(MemoryGlobalContext.from_table(_memory_table(shards, [*stage.requires, *stage.reads_if_present])))
    assert res.columns.equals(mem.columns) and res.stats.phash_links == mem.stats.phash_links


@pytest.mark.parametrize("parallelism", [1, 3, 40])
def test_sharded_key_ranks_equal_a_full_sort(tmp_path, parallelism, monkeypatch):
    import mmcurate.pipeline.global_sharded as gs

    rng = np.random.default_rng(5)
    alphabet = list("abcAZ09_-é€😀ßñ\u00a0\u4e2d")
    keys = list({"".join(rng.choice(alphabet, int(rng.integers(1, 6)))) for _ in range(3000)})
    keys = [keys[i] for i in rng.permutation(len(keys))]
    n = len(keys)
    cuts = [0, n // 7, n // 2, n // 2 + 3, n]
    shards = [pa.table({"key": keys[a:b], "source": ["s"] * (b - a)}) for a, b in zip(cuts[:-1], cuts[1:])]
    work = _work(tmp_path, shards)
    ctx = ShardedGlobalContext(work, len(shards), map_fn=_reversed_map, parallelism=parallelism)
    ctx.remove(make_ids(1, [0, 5, 9]))
    monkeypatch.setattr(gs, "KEY_ROWS_PER_PARTITION", 100)  # many range partitions
    monkeypatch.setattr(gs, "KEY_SAMPLE_PER_PARTITION", 3)  # a coarse boundary sample
    table = _memory_table(shards, ["key"], make_ids(1, [0, 5, 9]).tolist())
    ids, ranks = ctx.key_ranks("split")
    assert ids.tolist() == table.column(SAMPLE_ID).to_pylist()
    expect = np.empty(table.num_rows, np.int64)
    expect[np.asarray(pc.sort_indices(table.column("key")))] = np.arange(table.num_rows)
    assert ranks.tolist() == expect.tolist()
    assert sorted(table.column("key").to_pylist(), key=lambda k: k.encode()) == [
        table.column("key")[int(i)].as_py() for i in np.argsort(ranks)
    ]


def test_memory_context_from_a_table_in_any_row_order(tmp_path):
    """run_on_table's context puts rows in sample-id order (views and fetch rely on it): the same result
    whatever the table's row order; repeated ids are refused."""
    shards, _, _ = _setup(tmp_path, map, remove=False)
    stage = registry.create("phash_dedup", {"keep": {"max": "clip_score"}})
    table = _memory_table(shards, list(stage.requires))
    shuffled = table.take(pa.array(np.random.default_rng(3).permutation(table.num_rows)))
    a = stage.run(MemoryGlobalContext.from_table(table))
    b = stage.run(MemoryGlobalContext.from_table(shuffled))
    assert a.rejected.num_rows >= 100 and b.rejected.equals(a.rejected) and b.duplicates.equals(a.duplicates)
    with pytest.raises(StageError, match="repeat"):
        MemoryGlobalContext.from_table(pa.concat_tables([table.slice(0, 2), table.slice(0, 1)]))


def test_join_tasks_are_sized_in_entry_bytes():
    """The pigeonhole join's partitions hold a fixed budget of entry *bytes*: a PDQ code's 41-byte entries, and 8 per
    chunk with dihedral variants, mean fewer samples per task than a pHash's 17-byte ones (the same 8.4M entries
    per task at 64 bits as before)."""
    from types import SimpleNamespace

    from mmcurate.pipeline.global_sharded import HAMMING_ENTRY_BYTES_PER_PARTITION

    ctx = SimpleNamespace(n_partitions=lambda rows_per_partition: rows_per_partition)  # report the rows asked for
    rows = {
        shape: ShardedGlobalContext._join_partitions(ctx, r, shape)
        for shape, r in (((1, 1), 10), ((4, 1), 22), ((4, 8), 22))
    }
    assert rows[(1, 1)] == HAMMING_ENTRY_BYTES_PER_PARTITION // (11 * 17) == (1 << 23) // 11
    assert rows[(4, 1)] == HAMMING_ENTRY_BYTES_PER_PARTITION // (23 * 41)
    assert rows[(4, 8)] == HAMMING_ENTRY_BYTES_PER_PARTITION // (23 * 8 * 42)
