"""Pigeonhole-partitioned Hamming self-join: exactly ops.hamming_pairs' pairs, whatever the shards and partitions."""

from __future__ import annotations

import functools
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from mmcurate.curate.hamming_partition import SMALL_GROUP, chunk_layout, partitioned_hamming_pairs
from mmcurate.ops import hamming_pairs


def _codes(n: int, seed: int = 0, max_flips: int = 14) -> np.ndarray:
    """Random codes plus near-copies at 0..max_flips flipped bits, and a block of exact duplicates."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, np.iinfo(np.int64).max, n // 2, dtype=np.int64).view(np.uint64)
    src = rng.integers(0, base.size, n - base.size)
    copies = base[src].copy()
    for i in range(copies.size):
        bits = rng.choice(64, rng.integers(0, max_flips + 1), replace=False)
        for b in bits:
            copies[i] ^= np.uint64(1) << np.uint64(b)
    codes = np.concatenate([base, copies])
    codes[10:40] = codes[5]
    return codes


def _shards(codes, sizes):
    out, s = [], 0
    for size in sizes:
        out.append((np.arange(s, s + size, dtype=np.int64), codes[s : s + size]))
        s += size
    assert s == codes.size
    return out


def _shard_from(codes, start, stop):  # module level: picklable for process pools
    return np.arange(start, stop, dtype=np.int64), codes[start:stop]


@pytest.mark.parametrize("r", [0, 1, 4, 10, 12])
@pytest.mark.parametrize("n_partitions", [1, 7, 64])
def test_equals_the_single_node_join(r, n_partitions):
    codes = _codes(3000, seed=r)
    ref_pairs, ref_d = hamming_pairs(codes, r)
    res = partitioned_hamming_pairs(_shards(codes, [1000, 1, 1499, 500]), r, n_partitions=n_partitions)
    assert np.array_equal(res.pairs, ref_pairs) and np.array_equal(res.distances, ref_d)
    assert res.stats["pairs"] == len(ref_pairs) and res.stats["chunks"] == r + 1
    assert res.stats["entries"] == (r + 1) * codes.size


def test_large_buckets_use_the_native_join_and_agree():
    # few distinct chunk values -> buckets far above the brute-force size
    rng = np.random.default_rng(3)
    codes = (rng.integers(0, 2**16, 4000).astype(np.uint64) << np.uint64(8)) ^ rng.integers(0, 4, 4000).astype(
        np.uint64
    )
    for r in (2, 6):
        ref, d = hamming_pairs(codes, r)
        res = partitioned_hamming_pairs(_shards(codes, [2000, 2000]), r, n_partitions=3)
        assert np.array_equal(res.pairs, ref) and np.array_equal(res.distances, d)


def test_ids_need_not_be_positions():
    codes = _codes(800, seed=9)
    ids = np.unique(np.random.default_rng(0).integers(0, 10**12, 900))[:800]
    ids = np.random.default_rng(1).permutation(ids).astype(np.int64)
    ref, _ = hamming_pairs(codes, 6)
    want = np.stack([np.minimum(ids[ref[:, 0]], ids[ref[:, 1]]), np.maximum(ids[ref[:, 0]], ids[ref[:, 1]])], 1)
    res = partitioned_hamming_pairs([(ids[:300], codes[:300]), (ids[300:], codes[300:])], 6, n_partitions=5)
    got = res.pairs[np.lexsort((res.pairs[:, 1], res.pairs[:, 0]))]
    want = want[np.lexsort((want[:, 1], want[:, 0]))]
    assert np.array_equal(got, want)


def test_process_pool_and_lazy_shards_give_the_same_pairs(tmp_path):
    codes = _codes(2000, seed=4)
    ref, d = hamming_pairs(codes, 10)
    lazy = [functools.partial(_shard_from, codes, s, min(s + 700, 2000)) for s in range(0, 2000, 700)]
    with ProcessPoolExecutor(2) as pool:
        res = partitioned_hamming_pairs(lazy, 10, n_partitions=8, spill_dir=tmp_path / "spill", map_fn=pool.map)
    assert np.array_equal(res.pairs, ref) and np.array_equal(res.distances, d)
    assert (tmp_path / "spill").exists()  # a given spill_dir is left for the caller


def test_layout_and_misuse():
    for r in (0, 5, 10, 31, 63):
        lay = chunk_layout(r)
        assert len(lay) == r + 1 and sum(w for _, w in lay) == 64 and lay[0][0] == 0
        assert all(o2 == o1 + w1 for (o1, w1), (o2, _) in zip(lay, lay[1:]))
    with pytest.raises(ValueError, match="0..63"):
        chunk_layout(64)
    with pytest.raises(ValueError, match="n_partitions"):
        partitioned_hamming_pairs([], 4, n_partitions=0)
    with pytest.raises(ValueError, match="repeat"):
        partitioned_hamming_pairs([(np.array([1, 1]), np.array([3, 4], np.uint64))], 4)
    with pytest.raises(ValueError, match="ids must be integers"):
        partitioned_hamming_pairs([(np.array([1.0]), np.array([3], np.uint64))], 4)
    empty = partitioned_hamming_pairs([], 4)
    assert empty.pairs.shape == (0, 2) and empty.stats["pairs"] == 0


def _cluster_codes(seed: int) -> np.ndarray:
    """Hundreds of near-copies (0..6 bits) of two nearby heads, exact copies and unrelated codes."""
    rng = np.random.default_rng(seed)
    heads = rng.integers(0, 2**64, 2, dtype=np.uint64)
    heads[1] = heads[0] ^ np.uint64(0xFF)
    near = np.repeat(heads, 600)
    for i in range(near.size):
        for b in rng.choice(64, int(rng.integers(0, 7)), replace=False):
            near[i] ^= np.uint64(1) << np.uint64(b)
    codes = np.concatenate([near, np.full(500, near[3]), rng.integers(0, 2**64, 800, dtype=np.uint64)])
    return codes[rng.permutation(codes.size)]


@pytest.mark.parametrize("r", [4, 10])
def test_linked_ids_and_links_equal_the_pairs(r, monkeypatch):
    from mmcurate.curate import dedup
    from mmcurate.curate.hamming_partition import partitioned_linked_ids

    # small sampling constants so the dense clusters become implicit balls in the big buckets
    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 128)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 100)
    codes = _cluster_codes(r)
    pairs, _ = hamming_pairs(codes, r, device="cpu")
    res = partitioned_linked_ids(_shards(codes, [700, 1000, 800]), r, n_partitions=5)
    assert res.ids.tolist() == np.unique(pairs).tolist()
    n = codes.size
    want = dedup.connected_components(n, pairs)
    got = dedup.connected_components(n, res.links)
    assert np.array_equal(np.unique(want, return_inverse=True)[1], np.unique(got, return_inverse=True)[1])
    # a bounded number of links per linked sample and bucket (small buckets link their pairs), not all pairs
    assert res.links.shape[0] <= (r + 1) * res.ids.size * SMALL_GROUP // 2
    assert len(pairs) > 20 * res.links.shape[0]
