"""semantic_dedup_streaming: exactly semantic_dedup on the streaming run's own clusters, independent of how
the rows are sharded, chunked and partitioned, keyed by (possibly non-contiguous) global ids."""

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcurate.curate.semantic import semantic_dedup
from mmcurate.curate.semantic_stream import (
    EmbeddingShard,
    FileSpill,
    MemorySpill,
    array_shards,
    draw_sample,
    id_hash,
    npy_shards,
    parquet_shards,
    sample_ids,
    semantic_dedup_streaming,
)

SIZES = (400, 1300, 17, 1283)  # unequal shards, one tiny
N_CLUSTERS = 8


def clustered_with_near_duplicates(n=sum(SIZES), d=32, dup_frac=0.25, seed=0):  # noqa: B008 - a sum of constants
    """Unit vectors around a few centres plus planted near-duplicates at a spread of noise levels
    (some inside eps, some outside), like benchmarks/bench_semantic.py's ``synthetic``."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_frac)
    n_base = n - n_dup
    centers = rng.standard_normal((12, d))
    x = np.empty((n, d))
    x[:n_base] = centers[rng.integers(0, 12, n_base)] * 0.3 + rng.standard_normal((n_base, d)) / np.sqrt(d) * 3
    x[:n_base] /= np.linalg.norm(x[:n_base], axis=1, keepdims=True)
    src = rng.integers(0, n_base, n_dup)
    x[n_base:] = x[src] + rng.uniform(0.0, 0.6, n_dup)[:, None] * rng.standard_normal((n_dup, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(n)].astype(np.float32)


def split(x, sizes=SIZES):
    return np.split(x, np.cumsum(sizes)[:-1])


def policy_args(keep, n, ids=None):
    """(streaming keep, semantic_dedup keep) for a policy name; scores are given by id to the former."""
    if keep != "scores":
        return keep, keep
    s = np.random.default_rng(7).random(n)
    s[::97] = np.nan  # NaN ranks last
    return (np.arange(n) if ids is None else ids, s), s


def write_npy(tmp_path, parts):
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"e{i}.npy")
        np.save(paths[-1], p)
    return paths


def write_parquet(tmp_path, parts, dtype, ids=None, list_type=False, row_group_size=256):
    paths, off = [], 0
    for i, p in enumerate(parts):
        v = pa.array(p.astype(dtype).reshape(-1))
        col = (
            pa.ListArray.from_arrays(pa.array(np.arange(0, p.size + 1, p.shape[1], dtype=np.int32)), v)
            if list_type
            else pa.FixedSizeListArray.from_arrays(v, p.shape[1])
        )
        cols = {"image_embedding": col, "caption": pa.array([f"c{j}" for j in range(len(p))])}
        if ids is not None:
            cols["sample_id"] = pa.array(ids[off : off + len(p)])
        off += len(p)
        paths.append(tmp_path / f"e{i}.parquet")
        pq.write_table(pa.table(cols), paths[-1], row_group_size=row_group_size)
    return paths


def make_shards(kind, x, tmp_path):
    """(shards, the float32 values semantic_dedup must see) for a storage kind."""
    parts = split(x)
    if kind == "array":
        return array_shards(parts), x
    if kind == "npy":
        return npy_shards(write_npy(tmp_path, parts)), x
    if kind == "parquet16":
        return parquet_shards(write_parquet(tmp_path, parts, np.float16)), x.astype(np.float16).astype(np.float32)
    if kind == "parquet32":
        return parquet_shards(write_parquet(tmp_path, parts, np.float32)), x
    raise AssertionError(kind)


def assert_same_as_semantic_dedup(r, ref, ids=None):
    """Streaming result r equals semantic_dedup result ref, ref's indices mapped to ids."""
    ids = np.arange(ref.keep.size) if ids is None else ids
    np.testing.assert_array_equal(r.ids, ids)
    np.testing.assert_array_equal(r.keep, ref.keep)
    np.testing.assert_array_equal(r.cluster, ref.cluster)
    np.testing.assert_array_equal(r.max_similarity, ref.max_similarity)
    np.testing.assert_array_equal(r.duplicate_of, np.where(ref.duplicate_of >= 0, ids[ref.duplicate_of], -1))
    np.testing.assert_array_equal(r.centroids, ref.centroids)
    np.testing.assert_array_equal(r.representative, ids[ref.representative])


def assert_results_equal(a, b):
    for f in ("ids", "keep", "duplicate_of", "cluster", "max_similarity", "centroids"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


# ------------------------------------------------------------------------------------ (a) exactness


@pytest.mark.parametrize("n_partitions", [1, 3])
@pytest.mark.parametrize("kind", ["array", "npy", "parquet16"])
@pytest.mark.parametrize("keep", ["hard", "easy", "random", "scores"])
def test_equals_semantic_dedup_on_its_clusters(tmp_path, keep, kind, n_partitions):
    x = clustered_with_near_duplicates()
    shards, values = make_shards(kind, x, tmp_path)
    sk, rk = policy_args(keep, len(x))
    r = semantic_dedup_streaming(
        shards,
        eps=0.05,
        n_clusters=N_CLUSTERS,
        keep=sk,
        sample_size=1500,
        seed=3,
        device="cpu",
        n_partitions=n_partitions,
        chunk_rows=300,
        spill_dir=str(tmp_path),
        block=64,
    )
    ref = semantic_dedup(values, eps=0.05, keep=rk, device="cpu", seed=3, block=64, clusters=(r.centroids, r.cluster))
    assert 100 < r.n_duplicates < 1000  # the planted near-duplicates inside eps, not the far ones
    assert_same_as_semantic_dedup(r, ref)
    np.testing.assert_array_equal(r.keep_at(0.1), ref.keep_at(0.1))
    assert list(tmp_path.glob("semstream-*")) == []  # the spill is removed
    st = r.stats
    assert st["n"] == len(x) and st["sample_size"] == 1500 and st["n_partitions"] == n_partitions
    assert sum(st["partition_sizes"]) == len(x)
    assert st["cluster_sizes"]["max"] == np.bincount(r.cluster).max() == st["largest_cluster_rows"]
    assert st["peak_task_rows"] == max(300, st["largest_cluster_rows"])


def test_parquet_float32_list_column_and_id_column(tmp_path):
    x = clustered_with_near_duplicates(seed=1)
    ids = np.arange(len(x)) * 3 + 10
    r1 = semantic_dedup_streaming(
        parquet_shards(write_parquet(tmp_path, split(x), np.float32, ids=ids, list_type=True), id_column="sample_id"),
        n_clusters=N_CLUSTERS,
        sample_size=1000,
        device="cpu",
        n_partitions=2,
    )
    np.testing.assert_array_equal(r1.ids, ids)
    ref = semantic_dedup(x, keep="hard", device="cpu", clusters=(r1.centroids, r1.cluster))
    assert_same_as_semantic_dedup(r1, ref, ids)


# ------------------------------------------------------------------------ (b) layout independence


@pytest.mark.parametrize("keep", ["hard", "random"])
def test_independent_of_shards_partitions_and_chunks(tmp_path, keep):
    x = clustered_with_near_duplicates(seed=2)
    runs = []
    for sizes, n_part, chunk in [
        ((len(x),), 1, 100000),
        (SIZES, 3, 64),
        ((1000, 1000, 1000), 8, 999),
        ((1, 2, 2997), 5, 1),
    ]:
        runs.append(
            semantic_dedup_streaming(
                array_shards(split(x, sizes)),
                n_clusters=N_CLUSTERS,
                keep=keep,
                sample_size=1200,
                device="cpu",
                n_partitions=n_part,
                chunk_rows=chunk,
                seed=1,
            )
        )
    for r in runs[1:]:
        assert_results_equal(runs[0], r)
    assert runs[0].n_duplicates > 100


@pytest.mark.parametrize("keep", ["hard", "random"])
def test_memory_spill_equals_file_spill_and_writes_nothing(tmp_path, monkeypatch, keep):
    """Pass 2's rows held in RAM (MemorySpill) give the FileSpill's result, and nothing is written anywhere
    (the temp dir stays empty); the FileSpill's directory is gone afterwards."""
    import tempfile

    x = clustered_with_near_duplicates(seed=4)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    kw = {"n_clusters": N_CLUSTERS, "keep": keep, "sample_size": 1200, "device": "cpu", "n_partitions": 3}
    kw["chunk_rows"] = 257
    in_ram = semantic_dedup_streaming(array_shards(split(x, SIZES)), spill=MemorySpill(), representatives=True, **kw)
    assert list(tmp.iterdir()) == [] and in_ram.stats["spill_bytes"] == 0
    on_disk = semantic_dedup_streaming(
        array_shards(split(x, SIZES)), spill=FileSpill(tmp_path / "rows"), representatives=True, **kw
    )
    assert on_disk.stats["spill_bytes"] > 0 and not (tmp_path / "rows").exists()
    assert_results_equal(in_ram, on_disk)
    for a, b in zip(in_ram.representatives, on_disk.representatives):
        np.testing.assert_array_equal(a, b)
    assert in_ram.n_duplicates > 100


# ------------------------------------------------------------------------------ (c) arbitrary ids


@pytest.mark.parametrize("keep", ["hard", "easy", "random", "scores"])
def test_noncontiguous_ids_follow_id_order(keep):
    """Shuffled large ids == semantic_dedup on the rows put in ascending id order."""
    x = clustered_with_near_duplicates(seed=4)
    rng = np.random.default_rng(9)
    ids = rng.choice(10**12, len(x), replace=False).astype(np.int64)
    by_id = np.argsort(ids)
    sk, rk = policy_args(keep, len(x), ids=ids)
    r = semantic_dedup_streaming(
        array_shards(split(x), ids=split(ids)),
        n_clusters=N_CLUSTERS,
        keep=sk,
        sample_size=1500,
        device="cpu",
        n_partitions=3,
        seed=5,
    )
    ref = semantic_dedup(
        x[by_id], keep=rk if keep != "scores" else rk[by_id], device="cpu", seed=5, clusters=(r.centroids, r.cluster)
    )
    assert_same_as_semantic_dedup(r, ref, ids[by_id])
    np.testing.assert_array_equal(r.positions(ids[:5]), np.searchsorted(r.ids, ids[:5]))
    with pytest.raises(KeyError):
        r.positions([10**13])


@pytest.mark.parametrize("keep", ["hard", "easy"])
def test_exact_copies_keep_the_smallest_id(keep):
    """Identical rows tie on every key: the smallest id ranks first, is kept, and is every copy's witness."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((60, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    x = np.concatenate([base, base, base]).astype(np.float32)
    ids = rng.choice(10**9, len(x), replace=False).astype(np.int64)
    perm = rng.permutation(len(x))  # rows and their ids spread over the shards in random order
    r = semantic_dedup_streaming(
        array_shards(split(x[perm], (50, 70, 60)), ids=split(ids[perm], (50, 70, 60))),
        eps=0.01,
        n_clusters=4,
        keep=keep,
        sample_size=100,
        device="cpu",
        n_partitions=2,
    )
    assert r.keep.sum() == 60
    groups = ids.reshape(3, 60)
    smallest = groups.min(axis=0)
    for g in range(3):
        pos = r.positions(groups[g])
        np.testing.assert_array_equal(r.keep[pos], groups[g] == smallest)
        np.testing.assert_array_equal(r.duplicate_of[pos], np.where(groups[g] == smallest, -1, smallest))
        np.testing.assert_array_equal(r.representative[pos], smallest)


# ------------------------------------------------------------------------------- (d) process pool


def test_process_pool_map_gives_the_same_result(tmp_path):
    x = clustered_with_near_duplicates(seed=6)
    shards = npy_shards(write_npy(tmp_path, split(x)))
    kw = {
        "n_clusters": N_CLUSTERS,
        "keep": "random",
        "sample_size": 1500,
        "device": "cpu",
        "n_partitions": 4,
        "seed": 2,
        "chunk_rows": 500,
    }
    r1 = semantic_dedup_streaming(shards, **kw)
    # spawn: a forked child of a process that has run OpenMP (faiss) can hang
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        r2 = semantic_dedup_streaming(shards, map_fn=ex.map, **kw)
    assert_results_equal(r1, r2)
    assert r1.stats["partition_sizes"] == r2.stats["partition_sizes"]


# ------------------------------------------------------------------------------------- (e) errors


def test_errors(tmp_path):
    x = clustered_with_near_duplicates(n=600)
    ok = {"n_clusters": 4, "sample_size": 200, "device": "cpu", "spill_dir": str(tmp_path)}
    sampled = sample_ids(array_shards([x]), 200, seed=0)
    for row in (int(sampled[-1]), int(np.setdiff1d(np.arange(300, 600), sampled)[-1])):
        # a bad row in the sample fails in pass 1, one outside it in pass 2 (after the spill started)
        bad = x.copy()
        bad[row] *= 1.5
        with pytest.raises(ValueError, match=rf"row {row - 300} \(id {row}\) has norm 1.5.*L2-normalised"):
            semantic_dedup_streaming(array_shards([bad[:300], bad[300:]]), **ok)
    nan = x.copy()
    nan[10, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        semantic_dedup_streaming(array_shards([nan]), **ok)
    assert list(tmp_path.iterdir()) == []  # the spill of a failed run is removed too
    with pytest.raises(ValueError, match="dimension differs"):
        semantic_dedup_streaming(array_shards([x[:300], x[300:, :16]]), **ok)
    with pytest.raises(ValueError, match="duplicate sample ids.*id 5"):
        semantic_dedup_streaming(
            [EmbeddingShard.from_array(x[:300]), EmbeddingShard.from_array(x[300:], id_offset=5)], **ok
        )
    with pytest.raises(ValueError, match=">= 0"):
        semantic_dedup_streaming([EmbeddingShard.from_array(x, id_offset=-1)], **ok)
    with pytest.raises(ValueError, match="no shards"):
        semantic_dedup_streaming([], **ok)
    with pytest.raises(ValueError, match="shards are empty"):
        semantic_dedup_streaming(array_shards([x[:0], x[:0]]), **ok)
    with pytest.raises(ValueError, match="sample_size=3 is smaller than n_clusters=4"):
        semantic_dedup_streaming(array_shards([x]), **{**ok, "sample_size": 3})
    with pytest.raises(ValueError, match="eps"):
        semantic_dedup_streaming(array_shards([x]), eps=1.0, **ok)
    with pytest.raises(ValueError, match="keep must be one of"):
        semantic_dedup_streaming(array_shards([x]), keep="nope", **ok)
    with pytest.raises(TypeError, match="bare score array"):
        semantic_dedup_streaming(array_shards([x]), keep=np.zeros(len(x)), **ok)
    with pytest.raises(ValueError, match="1 sample ids have no score, e.g. id 599"):
        semantic_dedup_streaming(array_shards([x]), keep=(np.arange(599), np.zeros(599)), **ok)
    with pytest.raises(TypeError, match="EmbeddingShard"):
        semantic_dedup_streaming([x], **ok)
    with pytest.raises(ValueError, match="ids must be int"):
        EmbeddingShard.from_array(x, ids=np.arange(5))
    with pytest.raises(TypeError, match="float"):
        EmbeddingShard.from_array(np.ones((4, 4), np.int32))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    with pytest.raises(ValueError, match="C-ordered"):
        EmbeddingShard.from_npy(tmp_path / "f.npy")
    p = write_parquet(tmp_path, [x[:10]], np.float32)[0]
    with pytest.raises(ValueError, match="no column 'emb'"):
        EmbeddingShard.from_parquet(p, column="emb")
    with pytest.raises(TypeError, match="list of floats"):
        EmbeddingShard.from_parquet(p, column="caption")
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("semstream-")]


def test_null_parquet_embedding_is_an_error(tmp_path):
    x = clustered_with_near_duplicates(n=300)
    col = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1], mask=pa.array(np.arange(300) == 7))
    pq.write_table(pa.table({"image_embedding": col}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match="1 null embeddings"):
        semantic_dedup_streaming(parquet_shards([tmp_path / "n.parquet"]), n_clusters=2, sample_size=300, device="cpu")


# ----------------------------------------------------------------------------------- (f) sampling


def test_sample_is_seeded_and_independent_of_layout(tmp_path):
    x = clustered_with_near_duplicates(seed=8)
    ids = np.random.default_rng(1).choice(10**10, len(x), replace=False)
    a = sample_ids(array_shards(split(x), ids=split(ids)), 500, seed=4)
    rev = [EmbeddingShard.from_array(p, ids=i) for p, i in zip(split(x[::-1], (7, 2993)), split(ids[::-1], (7, 2993)))]
    b = sample_ids(rev, 500, seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.size == 500 and np.all(np.diff(a) > 0) and np.isin(a, ids).all()
    assert not np.array_equal(a, sample_ids(rev, 500, seed=5))
    # the rows come from the stored values, in id order, whatever the storage's chunking
    sel, rows = draw_sample(
        parquet_shards(
            write_parquet(tmp_path, split(x), np.float32, ids=ids, row_group_size=37), id_column="sample_id"
        ),
        500,
        seed=4,
    )
    np.testing.assert_array_equal(sel, a)
    row_of = dict(zip(ids.tolist(), range(len(ids))))
    np.testing.assert_array_equal(rows, x[[row_of[i] for i in a.tolist()]])


def test_sample_is_uniform():
    ids = np.arange(100_000)
    s = sample_ids(array_shards([np.zeros((100_000, 1), np.float32)]), 10_000, seed=0)
    counts = np.bincount(s // 10_000, minlength=10)  # 10 equal id ranges: ~1000 each
    assert np.abs(counts - 1000).max() < 150
    assert abs(np.mean(s % 2) - 0.5) < 0.03  # no parity bias
    h = id_hash(ids, 0)
    assert np.unique(h).size == ids.size  # a bijection: no ties


# --------------------------------------------------------------------------------------- shards


def test_parquet_shard_reads_by_row_group(tmp_path):
    x = clustered_with_near_duplicates(n=1000, seed=3)
    sh = EmbeddingShard.from_parquet(write_parquet(tmp_path, [x], np.float16, row_group_size=64)[0])
    x16 = x.astype(np.float16).astype(np.float32)
    assert (sh.count, sh.dim) == (1000, x.shape[1])
    np.testing.assert_array_equal(sh.read(60, 200), x16[60:200])
    chunks = list(sh.chunks(100))
    assert max(len(c) for _, c in chunks) <= 100
    assert [s for s, _ in chunks] == list(np.cumsum([0] + [len(c) for _, c in chunks[:-1]]))
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x16)
    rows = np.array([0, 63, 64, 65, 500, 999])
    np.testing.assert_array_equal(sh.take(rows), x16[rows])


def test_npy_shard_with_ids_file(tmp_path):
    x = clustered_with_near_duplicates(n=200)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ids.npy", np.arange(200) * 7)
    sh = EmbeddingShard.from_npy(tmp_path / "x.npy", ids=tmp_path / "ids.npy")
    np.testing.assert_array_equal(sh.ids(), np.arange(200) * 7)
    assert isinstance(np.load(tmp_path / "x.npy", mmap_mode="r"), np.memmap)
    np.testing.assert_array_equal(np.concatenate([c for _, c in sh.chunks(33)]), x)


def test_import_loads_no_faiss_or_torch():
    import subprocess

    code = (
        "import sys, mmcurate.curate.semantic_stream; assert 'faiss' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
