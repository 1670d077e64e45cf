"""Pigeonhole-partitioned self-join over 256-bit (PDQ) codes: exactly ops.hamming_pairs' pairs."""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.curate.hamming_partition import chunk_layout, partition_linked, partitioned_hamming_pairs
from mmcurate.ops import hamming_pairs


def _codes(n: int, seed: int = 0, max_flips: int = 30) -> np.ndarray:
    """uint64[n, 4]: random codes plus near-copies at 0..max_flips flipped bits, and exact duplicates."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n // 2, 256), dtype=np.uint8)
    copies = bits[rng.integers(0, len(bits), n - len(bits))]
    for row in copies:
        row[rng.choice(256, rng.integers(0, max_flips + 1), replace=False)] ^= 1
    codes = np.packbits(np.concatenate([bits, copies]), axis=1, bitorder="little").view(np.uint64)
    codes[10:30] = codes[5]
    return codes


def _shards(codes, sizes):
    out, s = [], 0
    for size in sizes:
        out.append((np.arange(s, s + size, dtype=np.int64), codes[s : s + size]))
        s += size
    return out


@pytest.mark.parametrize("r", [0, 2, 3, 10, 31, 40])
@pytest.mark.parametrize("n_partitions", [1, 16])
def test_equals_the_single_node_join(r, n_partitions):
    codes = _codes(1600, seed=r)
    ref_pairs, ref_d = hamming_pairs(codes, r, device="cpu")
    assert len(ref_pairs) > 0
    res = partitioned_hamming_pairs(_shards(codes, [700, 1, 899]), r, n_partitions=n_partitions)
    np.testing.assert_array_equal(res.pairs, ref_pairs)
    np.testing.assert_array_equal(res.distances, ref_d)
    assert res.stats["chunks"] == max(r + 1, 4) and sum(res.stats["chunk_widths"]) == 256


def test_chunk_layout_256():
    assert chunk_layout(31, 256) == [(8 * j, 8) for j in range(32)]
    assert chunk_layout(0, 256) == [(64 * j, 64) for j in range(4)]  # a chunk value fits a uint64
    assert [w for _, w in chunk_layout(10, 256)] == [24, 24, 24] + [23] * 8
    with pytest.raises(ValueError):
        chunk_layout(256, 256)


def test_shards_must_not_mix_widths(tmp_path):
    a = _codes(20)
    b = np.arange(20, dtype=np.uint64)
    with pytest.raises(ValueError, match="mix code widths"):
        partitioned_hamming_pairs([(np.arange(20), a), (np.arange(20, 40), b)], 4, n_partitions=2)


def test_linked_takes_256_bit_codes(tmp_path):
    """partition_linked on 256-bit entries (phash_dedup's hash: pdq in sharded mode): links within the radius
    whose ids are those of the partition's pairs (the large-bucket path: tests/pipeline/test_pdq_dedup_sharded)."""
    from mmcurate.curate.hamming_partition import partition_codes, partition_pairs

    codes = _codes(40)
    codes[20:] = codes[:20] ^ np.uint64(3)  # each code 2 bits from another per word: 8 bits
    partition_codes(np.arange(40), codes, 8, 1, tmp_path, "s0")
    links = partition_linked(tmp_path / "p00000", 8)
    pairs, _ = partition_pairs(tmp_path / "p00000", 8)
    assert np.array_equal(np.unique(links), np.unique(pairs)) and np.unique(links).size == 40
    assert (np.bitwise_count(codes[links[:, 0]] ^ codes[links[:, 1]]).sum(axis=1) <= 8).all()


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("r", [10, 22])
def test_linked_dihedral_codes_equal_the_single_node_range_search(r, bounded, monkeypatch):
    """Dihedral shards (uint64[n, 8, 4]: each sample's 8 transform codes, identity first): the linked ids and
    components are those of ops.hamming_range's pairs of a transform of one sample against another's identity code
    (never a sample with itself), small buckets and a dense cluster's large ones alike; pair listing refuses them."""
    from mmcurate.curate.dedup import connected_components
    from mmcurate.curate.hamming_partition import SMALL_GROUP, partitioned_linked_ids
    from mmcurate.ops import hamming_range

    if bounded:  # large buckets take the path that keeps a dense cluster implicit (balls at these constants)
        from mmcurate.curate import dedup, hamming_partition

        monkeypatch.setattr(hamming_partition, "DIHEDRAL_PAIR_BUCKET", 0)
        monkeypatch.setattr(dedup, "DENSE_SAMPLE", 16)
        monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 5)
    rng = np.random.default_rng(r)
    n = 400
    v = rng.integers(0, 2**63, size=(n, 8, 4), dtype=np.uint64)
    flip = _codes(2 * n, seed=r + 1)  # random bit patterns to xor in
    for i in range(1, n):
        if rng.random() < 0.3:  # a copy of a transform of an earlier sample
            j, k = int(rng.integers(i)), int(rng.integers(8))
            mask = np.zeros(4, np.uint64)
            for b in rng.choice(256, int(rng.integers(0, 2 * r)), replace=False):
                mask[b // 64] |= np.uint64(1) << np.uint64(b % 64)
            v[i, 0] = v[j, k] ^ mask
    v[300 : 300 + SMALL_GROUP + 20, 0] = v[299, 3]  # a dense cluster: a bucket above SMALL_GROUP
    v[300 : 300 + SMALL_GROUP + 20, 0, 0] ^= flip[: SMALL_GROUP + 20, 0] & np.uint64(0x3F)
    v[5, 3] = v[5, 0]  # a symmetric image: its own transform equals its code, which links nothing
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    pairs, _ = hamming_range(np.ascontiguousarray(v[:, 0]), v, r)
    pairs = np.asarray(pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    found = partitioned_linked_ids([(ids[a:b], v[a:b]) for a, b in ((0, 150), (150, 151), (151, n))], r, 5)
    np.testing.assert_array_equal(found.ids, np.unique(ids[pairs]))
    assert found.stats["n_codes"] == n
    got = connected_components(n, (found.links - 1) // 3)
    want = connected_components(n, pairs)
    np.testing.assert_array_equal(np.unique(got, return_inverse=True)[1], np.unique(want, return_inverse=True)[1])
    with pytest.raises(ValueError, match="dihedral"):
        partitioned_hamming_pairs([(ids, v)], r, n_partitions=2)
