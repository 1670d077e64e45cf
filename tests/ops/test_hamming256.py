"""Hamming search over 256-bit codes (PDQ): exact equality with a numpy brute force and with faiss
(IndexBinaryFlat, IndexBinaryMultiHash), dihedral queries, layouts, plans and misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cpu_and_cuda
from mmcurate.ops.hamming import (
    DIHEDRAL,
    HammingRangeIndex,
    hamming_join_plan,
    hamming_knn,
    hamming_pairs,
    hamming_range,
)

METHODS = ["auto", "mih", "brute_force"]


# ---------------------------------------------------------------- references (pure numpy)
def to_bits(codes: np.ndarray) -> np.ndarray:
    """uint64[n, 4] -> uint8[n, 256], bit b of the code at column b."""
    return np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=-1, bitorder="little")


def from_bits(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, axis=-1, bitorder="little").view(np.uint64)


def reference_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] distances through unpacked bits (independent of the popcount kernels)."""
    ba, bb = to_bits(a).astype(np.int32), to_bits(b).astype(np.int32)
    return ba.sum(1)[:, None] + bb.sum(1)[None, :] - 2 * (ba @ bb.T)


def reference_pairs(codes: np.ndarray, r: int):
    d = reference_distances(codes, codes)
    i, j = np.nonzero(np.triu(d <= r, 1))
    return np.stack([i, j], 1).astype(np.int64), d[i, j].astype(np.uint8)


def dihedral_distances(variants: np.ndarray, db: np.ndarray) -> np.ndarray:
    """[nq, n]: the minimum over each query's 8 variants."""
    nq = variants.shape[0]
    return reference_distances(variants.reshape(-1, 4), db).reshape(nq, DIHEDRAL, -1).min(1)


# ---------------------------------------------------------------- code generators
def random_codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=(n, 4), dtype=np.uint64)


def clustered_codes(n: int, seeds: int = 12, max_flips: int = 40, seed: int = 0) -> np.ndarray:
    """Near-duplicates: each code is a seed code with 0..max_flips random bits flipped, so pairs spread over
    distances 0..2 * max_flips and every radius 0..40 has both hits and misses."""
    rng = np.random.default_rng(seed)
    bits = to_bits(random_codes(seeds, seed + 1))[rng.integers(0, seeds, n)]
    for row in bits:
        row[rng.choice(256, rng.integers(0, max_flips + 1), replace=False)] ^= 1
    return from_bits(bits)


CLUSTERED = clustered_codes(700)
RANDOM = random_codes(300, seed=3)


# ---------------------------------------------------------------- self-join
@pytest.mark.parametrize("r", [0, 1, 3, 8, 15, 24, 31, 40])
@pytest.mark.parametrize("method", METHODS)
def test_pairs_clustered_codes_match_brute_force(r, method):
    pairs, dist = hamming_pairs(CLUSTERED, r, device="cpu", method=method)
    ref_pairs, ref_dist = reference_pairs(CLUSTERED, r)
    assert ref_pairs.shape[0] > 0 or r == 0
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(dist, ref_dist)


def test_pairs_every_radius_0_to_40_on_clustered_and_random_codes():
    codes = np.concatenate([CLUSTERED[:300], RANDOM])
    d = reference_distances(codes, codes)
    for r in range(41):
        i, j = np.nonzero(np.triu(d <= r, 1))
        for method in ("mih", "brute_force"):
            pairs, dist = hamming_pairs(codes, r, device="cpu", method=method)
            np.testing.assert_array_equal(pairs, np.stack([i, j], 1), err_msg=f"r={r} {method}")
            np.testing.assert_array_equal(dist, d[i, j], err_msg=f"r={r} {method}")


def test_pairs_high_radius_on_random_codes():
    # uniform 256-bit codes are ~128 apart: only large radii find pairs
    for r in (100, 128, 255):
        for method in METHODS:
            pairs, dist = hamming_pairs(RANDOM, r, device="cpu", method=method)
            ref_pairs, ref_dist = reference_pairs(RANDOM, r)
            np.testing.assert_array_equal(pairs, ref_pairs)
            np.testing.assert_array_equal(dist, ref_dist)


def test_pairs_duplicates_and_large_n_cross_tiles():
    codes = clustered_codes(6000, seeds=200, max_flips=12, seed=5)
    codes[::7] = codes[0]  # a big group of identical codes
    ref = None
    for method in METHODS:
        pairs, dist = hamming_pairs(codes, 20, device="cpu", method=method, num_threads=2)
        if ref is None:
            ref = (pairs, dist)
            counts = np.bincount(dist, minlength=21)
            assert counts[0] >= (len(codes[::7]) * (len(codes[::7]) - 1)) // 2
        np.testing.assert_array_equal(pairs, ref[0])
        np.testing.assert_array_equal(dist, ref[1])
    # spot check against the reference on a slice
    sub = codes[:1500]
    np.testing.assert_array_equal(hamming_pairs(sub, 20, device="cpu")[0], reference_pairs(sub, 20)[0])


def test_layouts_agree():
    pairs, dist = hamming_pairs(CLUSTERED, 20, device="cpu")
    as_bytes = np.ascontiguousarray(CLUSTERED).view(np.uint8)  # faiss's (n, 32) packing
    for form in (as_bytes, CLUSTERED.view(np.int64), np.asfortranarray(CLUSTERED)):
        p, d = hamming_pairs(form, 20, device="cpu")
        np.testing.assert_array_equal(p, pairs)
        np.testing.assert_array_equal(d, dist)


def test_join_plan_256():
    big = hamming_join_plan(1_000_000, 31, bits=256)
    assert big["method"] == "mih"
    assert sum(big["widths"]) == 256 and sum(r + 1 for r in big["radii"]) == 32  # pigeonhole
    assert hamming_join_plan(100, 31, bits=256)["method"] == "brute_force"
    assert hamming_join_plan(1_000_000, 200, bits=256)["method"] == "brute_force"


# ---------------------------------------------------------------- faiss
def _faiss_pairs(index, codes8: np.ndarray, r: int):
    """faiss range search (radius is exclusive there) as sorted (i < j) pairs and distances."""
    lims, dist, labels = index.range_search(codes8, r + 1)
    q = np.repeat(np.arange(len(codes8)), np.diff(lims).astype(np.int64))
    keep = q < labels
    order = np.lexsort((labels[keep], q[keep]))
    return np.stack([q[keep], labels[keep]], 1)[order].astype(np.int64), dist[keep][order].astype(np.uint8)


@pytest.mark.parametrize("r", [0, 8, 20, 31, 40])
def test_pairs_match_faiss_flat_and_multihash(r):
    faiss = pytest.importorskip("faiss")
    codes = clustered_codes(2000, seeds=60, max_flips=25, seed=9)
    codes8 = np.ascontiguousarray(codes).view(np.uint8)
    flat = faiss.IndexBinaryFlat(256)
    flat.add(codes8)
    # 16 tables of 16 bits probed within 1 flip: 16 * (1 + 1) > 31 makes MultiHash exact up to r = 31
    mh = faiss.IndexBinaryMultiHash(256, 16, 16)
    mh.nflip = 1 if r <= 31 else 2
    mh.add(codes8)
    pairs, dist = hamming_pairs(codes, r, device="cpu")
    for index in (flat, mh):
        fp, fd = _faiss_pairs(index, codes8, r)
        np.testing.assert_array_equal(pairs, fp)
        np.testing.assert_array_equal(dist, fd)


def test_knn_matches_faiss_flat():
    faiss = pytest.importorskip("faiss")
    codes = clustered_codes(1500, seeds=40, max_flips=30, seed=4)
    codes8 = np.ascontiguousarray(codes).view(np.uint8)
    flat = faiss.IndexBinaryFlat(256)
    flat.add(codes8)
    fd, _ = flat.search(codes8[:200], 10)
    dist, idx = hamming_knn(codes, 10, queries=codes[:200], device="cpu")
    np.testing.assert_array_equal(dist, fd)  # faiss breaks ties in its own order: compare distances
    ref = reference_distances(codes[:200], codes)
    np.testing.assert_array_equal(np.take_along_axis(ref, idx, 1), dist)


# ---------------------------------------------------------------- top-k
@pytest.mark.parametrize("k", [1, 5, 40])
def test_knn_self_search_matches_brute_force(k):
    codes = CLUSTERED[:400]
    d = reference_distances(codes, codes)
    np.fill_diagonal(d, 1 << 20)
    order = np.lexsort((np.broadcast_to(np.arange(len(codes)), d.shape), d), axis=-1)[:, :k]
    dist, idx = hamming_knn(codes, k, device="cpu")
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(d, order, 1))


def test_knn_pads_with_minus_one():
    dist, idx = hamming_knn(RANDOM[:3], 5, device="cpu")
    assert (dist[:, 2:] == -1).all() and (idx[:, 2:] == -1).all()
    assert (dist[:, :2] > 0).all()


# ---------------------------------------------------------------- dihedral
def dihedral_variants(codes: np.ndarray, seed: int) -> np.ndarray:
    """Stand-ins for the 8 dihedral hashes: variant 0 is the code, the others fresh or noisy codes."""
    rng = np.random.default_rng(seed)
    bits = np.repeat(to_bits(codes)[:, None], DIHEDRAL, 1)
    for q in range(len(codes)):
        for v in range(1, DIHEDRAL):
            bits[q, v, rng.choice(256, rng.integers(0, 120), replace=False)] ^= 1
    return from_bits(bits)


@pytest.mark.parametrize("r", [0, 10, 31, 40])
@pytest.mark.parametrize("method", METHODS)
def test_dihedral_range_matches_min_over_variants(r, method):
    db = clustered_codes(500, seeds=10, max_flips=30, seed=11)
    db[50:60] = db[3]  # duplicates in the database
    queries = dihedral_variants(clustered_codes(300, seeds=10, max_flips=30, seed=12), seed=13)
    d = dihedral_distances(queries, db)
    q, j = np.nonzero(d <= r)
    pairs, dist = hamming_range(db, queries, r, method=method)
    np.testing.assert_array_equal(pairs, np.stack([q, j], 1))
    np.testing.assert_array_equal(dist, d[q, j])
    if method != "auto":
        return
    # packed bytes and the single-variant form agree with their own references
    p8, _ = hamming_range(db.view(np.uint8), queries.view(np.uint8), r)
    np.testing.assert_array_equal(p8, pairs)
    plain = hamming_range(db, queries[:, 0], r)[0]
    d0 = reference_distances(queries[:, 0], db)
    np.testing.assert_array_equal(plain, np.argwhere(d0 <= r))


def test_dihedral_match_through_a_non_identity_variant():
    db = random_codes(50, seed=20)
    queries = dihedral_variants(random_codes(5, seed=21), seed=22)
    queries[3, 5] = db[17]  # a rotated copy of database image 17
    pairs, dist = hamming_range(db, queries, 31)
    assert [3, 17] in pairs.tolist() and dist[pairs.tolist().index([3, 17])] == 0


def test_dihedral_knn():
    db = clustered_codes(400, seeds=10, max_flips=30, seed=14)
    queries = dihedral_variants(clustered_codes(30, seeds=10, max_flips=30, seed=15), seed=16)
    d = dihedral_distances(queries, db)
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), d.shape), d), axis=-1)[:, :7]
    dist, idx = hamming_knn(db, 7, queries=queries, device="cpu")
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(d, order, 1))


@pytest.mark.parametrize("method", METHODS)
def test_range_with_64_bit_codes(method):
    rng = np.random.default_rng(1)
    db = rng.integers(0, 2**64, 300, dtype=np.uint64)
    q = db[:40] ^ np.uint64(0b1011)
    d = np.bitwise_count(q[:, None] ^ db[None, :])
    for r in (0, 3, 12, 20):
        pairs, dist = hamming_range(db, q, r, method=method)
        np.testing.assert_array_equal(pairs, np.argwhere(d <= r))
        np.testing.assert_array_equal(dist, d[d <= r])


def test_range_plan_uses_multi_index_for_a_large_database():
    from mmcurate._native import native

    queries = random_codes(2000, seed=3)[:, None].repeat(DIHEDRAL, 1)
    plan = native().hamming_range(random_codes(200_000, seed=2), queries, 31)[2]
    assert plan["method"] == "mih" and sum(r + 1 for r in plan["radii"]) == 32


@pytest.mark.parametrize("method", METHODS)
def test_range_index_serves_many_searches_as_hamming_range(method):
    """An index built once answers every batch (dihedral, plain, 64-bit) as the one-shot search does."""
    db = clustered_codes(600, seeds=10, max_flips=30, seed=31)
    index = HammingRangeIndex(db, 22, method=method)
    assert len(index) == 600 and index.plan["method"] in ("mih", "brute_force")
    for seed in (32, 33):
        queries = dihedral_variants(clustered_codes(70, seeds=10, max_flips=30, seed=seed), seed=seed + 10)
        d = dihedral_distances(queries, db)
        pairs, dist = index.search(queries)
        np.testing.assert_array_equal(pairs, np.argwhere(d <= 22))
        np.testing.assert_array_equal(dist, d[d <= 22])
        np.testing.assert_array_equal(index.search(queries[:, 0])[0], hamming_range(db, queries[:, 0], 22)[0])
    assert index.search(np.zeros((0, 4), np.uint64))[0].shape == (0, 2)
    rng = np.random.default_rng(34)
    db64 = rng.integers(0, 2**64, 500, dtype=np.uint64)
    q64 = db64[:50] ^ np.uint64(0b101)
    d64 = np.bitwise_count(q64[:, None] ^ db64[None, :])
    np.testing.assert_array_equal(HammingRangeIndex(db64, 4, method=method).search(q64)[0], np.argwhere(d64 <= 4))


def test_range_index_of_a_large_database_is_multi_index_with_bounded_memory():
    """At 200k codes the persistent plan is multi-index hashing; each substring holds at most one bucket per code,
    so the index adds at most 8 bytes per code per substring."""
    db = random_codes(200_000, seed=35)
    index = HammingRangeIndex(db, 31)
    plan = index.plan
    assert plan["method"] == "mih" and sum(r + 1 for r in plan["radii"]) == 32
    assert all(2**w <= len(db) for w in plan["widths"])
    probed = sum(r >= 0 for r in plan["radii"])
    assert 0 < index.memory_bytes <= probed * 8 * len(db) + probed * 4
    queries = db[::1000] ^ np.array([0b111, 0, 0, 1 << 63], np.uint64)  # 4 bits off their source
    pairs, dist = index.search(queries)
    assert [tuple(p) for p in pairs[dist == 4]] == [(q, 1000 * q) for q in range(len(queries))]


# ---------------------------------------------------------------- GPU twin
@cpu_and_cuda()
def test_device_parity(device):
    codes = CLUSTERED
    ref = reference_pairs(codes, 31)
    pairs, dist = hamming_pairs(codes, 31, device=device)
    np.testing.assert_array_equal(pairs, ref[0])
    np.testing.assert_array_equal(dist, ref[1])
    dk, ik = hamming_knn(codes, 6, device=device)
    ck = hamming_knn(codes, 6, device="cpu")
    np.testing.assert_array_equal(dk, ck[0])
    np.testing.assert_array_equal(ik, ck[1])


# ---------------------------------------------------------------- misuse
def test_misuse_raises():
    with pytest.raises(ValueError, match="0..255"):
        hamming_pairs(RANDOM, 256, device="cpu")
    with pytest.raises(ValueError, match="0..64"):
        hamming_pairs(RANDOM[:, 0], 65, device="cpu")
    with pytest.raises(ValueError):
        hamming_pairs(np.zeros((4, 3), np.uint64), 3, device="cpu")
    with pytest.raises(ValueError):
        hamming_pairs(np.zeros((4, 16), np.uint8), 3, device="cpu")
    with pytest.raises(ValueError, match="256-bit"):
        hamming_range(RANDOM, RANDOM[:, 0], 3)
    with pytest.raises(ValueError):
        hamming_range(RANDOM, np.zeros((2, 4, 4), np.uint64), 3)
    with pytest.raises(ValueError, match="256-bit"):
        HammingRangeIndex(RANDOM, 3).search(RANDOM[:, 0])
    with pytest.raises(ValueError, match="0..64"):
        HammingRangeIndex(RANDOM[:, 0], 65)
    with pytest.raises(ValueError, match="bits"):
        hamming_join_plan(10, 3, bits=128)
