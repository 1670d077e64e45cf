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
