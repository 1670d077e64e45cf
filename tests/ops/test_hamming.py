"""Hamming search: exact equality with a numpy brute force, output contracts, misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cpu_and_cuda
from mmcurate.ops.hamming import HammingRangeIndex, hamming_distance, hamming_join_plan, hamming_knn, hamming_pairs

METHODS = ["auto", "mih", "brute_force"]


# ---------------------------------------------------------------- references (pure numpy)
def reference_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] Hamming distances by unpacking bits (independent of np.bitwise_count)."""
    x = (a[:, None] ^ b[None, :]).astype(np.uint64)
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(len(a), len(b), 64).sum(-1).astype(np.int64)


def reference_pairs(codes: np.ndarray, r: int):
    d = reference_distances(codes, codes)
    i, j = np.nonzero(np.triu(d <= r, 1))  # row-major order == sorted by (i, j)
    return np.stack([i, j], 1).astype(np.int64), d[i, j].astype(np.uint8)


def reference_knn(db: np.ndarray, k: int, queries=None):
    self_search = queries is None
    q = db if self_search else queries
    d = reference_distances(q, db)
    if self_search:
        d[np.arange(len(db)), np.arange(len(db))] = 1 << 20  # never its own neighbour
    nq, n = d.shape
    order = np.lexsort((np.broadcast_to(np.arange(n), d.shape), d), axis=-1)[:, :k]  # by (distance, index)
    dist = np.take_along_axis(d, order, 1)
    idx = order.astype(np.int64)
    valid = dist < (1 << 20)
    out_d = np.full((nq, k), -1, np.int32)
    out_i = np.full((nq, k), -1, np.int64)
    out_d[:, : order.shape[1]] = np.where(valid, dist, -1)
    out_i[:, : order.shape[1]] = np.where(valid, idx, -1)
    return out_d, out_i


# ---------------------------------------------------------------- code generators
def random_codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)


def flip_bits(code: np.uint64, bits) -> np.uint64:
    for b in bits:
        code ^= np.uint64(1) << np.uint64(b)
    return code


def clustered_codes(n: int, seeds: int = 5, max_flips: int = 6, seed: int = 0) -> np.ndarray:
    """Near-duplicates: each code is one of a few seed codes with 0..max_flips random bits flipped."""
    rng = np.random.default_rng(seed)
    base = random_codes(seeds, seed + 1)
    out = np.empty(n, np.uint64)
    for t in range(n):
        flips = rng.choice(64, size=rng.integers(0, max_flips + 1), replace=False)
        out[t] = flip_bits(base[rng.integers(seeds)], flips)
    return out


def assert_pairs_equal(codes, r, **kw):
    pairs, distances = hamming_pairs(codes, r, **kw)
    want_pairs, want_dist = reference_pairs(np.asarray(codes, np.uint64), r)
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
    assert distances.dtype == np.uint8 and distances.shape == (len(pairs),)
    np.testing.assert_array_equal(pairs, want_pairs)
    np.testing.assert_array_equal(distances, want_dist)
    return pairs, distances


# ---------------------------------------------------------------- hamming_pairs
@pytest.mark.parametrize("n", [0, 1, 2, 1000])
@pytest.mark.parametrize("r", [0, 1, 10, 32, 64])
@pytest.mark.parametrize("method", METHODS)
def test_pairs_random_codes_match_brute_force(n, r, method):
    assert_pairs_equal(random_codes(n, seed=n + r), r, device="cpu", method=method)


@pytest.mark.parametrize("r", [0, 3, 8, 12, 20])
@pytest.mark.parametrize("method", METHODS)
def test_pairs_clustered_codes_match_brute_force(r, method):
    codes = clustered_codes(1500, seeds=6, max_flips=8, seed=r)
    pairs, _ = assert_pairs_equal(codes, r, device="cpu", method=method)
    assert len(pairs) > 1000  # the clusters really produce many pairs


def test_pairs_20000_random_codes_match_brute_force_in_blocks():
    codes = random_codes(20000, seed=7)
    # plant near-duplicates so the output is not trivially empty
    codes[10000:10200] = [flip_bits(c, [s % 64, (3 * s) % 64]) for s, c in enumerate(codes[:200])]
    r = 6
    pairs, distances = hamming_pairs(codes, r, device="cpu", method="mih")
    want_pairs, want_dist = [], []
    for lo in range(0, len(codes), 2000):  # the reference in row blocks keeps memory small
        d = np.bitwise_count(codes[lo : lo + 2000, None] ^ codes[None, :])  # numpy's popcount, not ours
        i, j = np.nonzero(d <= r)
        keep = (i + lo) < j
        want_pairs.append(np.stack([i[keep] + lo, j[keep]], 1))
        want_dist.append(d[i[keep], j[keep]])
    np.testing.assert_array_equal(pairs, np.concatenate(want_pairs))
    np.testing.assert_array_equal(distances, np.concatenate(want_dist).astype(np.uint8))
    assert len(pairs) >= 200
    bf_pairs, bf_dist = hamming_pairs(codes, r, device="cpu", method="brute_force")
    np.testing.assert_array_equal(bf_pairs, pairs)
    np.testing.assert_array_equal(bf_dist, distances)


@pytest.mark.parametrize("method", METHODS)
def test_pairs_many_identical_codes(method):
    rng = np.random.default_rng(3)
    codes = np.concatenate(
        [np.full(300, 0xDEADBEEFCAFEF00D, np.uint64), random_codes(200, 4), np.full(50, 2**64 - 1, np.uint64)]
    )
    codes = codes[rng.permutation(len(codes))]
    pairs, distances = assert_pairs_equal(codes, 2, device="cpu", method=method)
    assert (distances == 0).sum() >= 300 * 299 // 2 + 50 * 49 // 2


@pytest.mark.parametrize("method", METHODS)
def test_pairs_codes_with_top_bit_set(method):
    codes = random_codes(600, 5) | np.uint64(1 << 63)
    codes[1] = flip_bits(codes[0], [0, 63])  # a pair that differs in the top bit
    assert_pairs_equal(codes, 2, device="cpu", method=method)
    pairs, distances = hamming_pairs(codes[:2], 2, device="cpu", method=method)
    np.testing.assert_array_equal(pairs, [[0, 1]])
    np.testing.assert_array_equal(distances, [2])


def test_pairs_sorted_and_unique_contract():
    codes = clustered_codes(800, seeds=3, max_flips=10, seed=11)
    pairs, distances = hamming_pairs(codes, 9, device="cpu")
    assert (pairs[:, 0] < pairs[:, 1]).all()
    keys = pairs[:, 0] * len(codes) + pairs[:, 1]
    assert (np.diff(keys) > 0).all()  # strictly increasing: sorted by (i, j), no repeats
    np.testing.assert_array_equal(distances, hamming_distance(codes[pairs[:, 0]], codes[pairs[:, 1]]))
    assert distances.max() <= 9


def test_pairs_input_layouts_agree():
    codes = clustered_codes(400, seed=2) | np.uint64(1 << 63)
    want = hamming_pairs(codes, 5, device="cpu")
    for layout in (
        codes.view(np.int64),
        codes.view(np.uint8).reshape(-1, 8),
        list(codes.view(np.int64)),
        codes[::-1].copy()[::-1],
    ):
        got = hamming_pairs(layout, 5, device="cpu")
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_pairs_thread_count_does_not_change_result():
    codes = clustered_codes(3000, seeds=20, max_flips=5, seed=9)
    one = hamming_pairs(codes, 7, device="cpu", num_threads=1)
    two = hamming_pairs(codes, 7, device="cpu", num_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_join_plan_uses_multi_index_for_large_small_radius_and_brute_force_otherwise():
    big = hamming_join_plan(1_000_000, 10)
    assert big["method"] == "mih"
    assert sum(big["widths"]) == 64
    assert sum(s + 1 for s in big["radii"]) == 10 + 1  # generalised pigeonhole allocation
    assert hamming_join_plan(100, 10)["method"] == "brute_force"
    assert hamming_join_plan(1_000_000, 60)["method"] == "brute_force"
    forced = hamming_join_plan(50, 64, method="mih")
    assert forced["method"] == "mih" and sum(s + 1 for s in forced["radii"]) == 65


def test_join_plan_skips_the_search_where_brute_force_costs_less_than_planning():
    """A join whose brute force is estimated below the plan search's own cost (~0.2 ms) is brute force without a
    search: the sharded pigeonhole join calls it on tens of thousands of ~80-code buckets. Larger joins still plan."""
    small = hamming_join_plan(300, 22, bits=256)
    assert small["method"] == "brute_force" and small["estimated_seconds"] <= 2e-4
    assert hamming_join_plan(100_000, 22, bits=256)["method"] == "mih"
    assert hamming_join_plan(300, 22, method="mih", bits=256)["method"] == "mih"  # forced still searches
    # a persistent index is planned per query and searched many times: never short-cut to brute force
    db = np.random.default_rng(0).integers(0, 2**63, (20_000, 4), dtype=np.uint64)
    assert HammingRangeIndex(db, 22).plan["method"] == "mih"


@cpu_and_cuda()
def test_pairs_device_parity(device):
    codes = clustered_codes(2000, seeds=10, max_flips=6, seed=1)
    assert_pairs_equal(codes, 6, device=device)


# ---------------------------------------------------------------- hamming_knn
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (50, 5), (700, 10), (700, 300)])
def test_knn_self_search_matches_brute_force(n, k):
    codes = clustered_codes(n, seeds=4, max_flips=5, seed=n)  # many ties
    d, i = hamming_knn(codes, k, device="cpu")
    want_d, want_i = reference_knn(codes, k)
    assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == i.shape == (n, k)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)


@pytest.mark.parametrize("k", [1, 7, 64])
def test_knn_with_queries_matches_brute_force_and_breaks_ties_by_index(k):
    db = clustered_codes(900, seeds=3, max_flips=3, seed=k)
    db[100:140] = db[5]  # exact duplicates: ties at distance 0 must list the smallest indices first
    queries = np.concatenate([db[[5, 0, 899]], clustered_codes(40, seeds=3, max_flips=4, seed=k + 1)])
    d, i = hamming_knn(db, k, queries=queries, device="cpu")
    want_d, want_i = reference_knn(db, k, queries)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)
    assert i[0, 0] == 5 and d[0, 0] == 0


def test_knn_pads_when_fewer_than_k_candidates():
    codes = random_codes(4, 1)
    d, i = hamming_knn(codes, 6, device="cpu")  # self-search: 3 candidates each
    assert (d[:, 3:] == -1).all() and (i[:, 3:] == -1).all()
    assert (d[:, :3] >= 0).all() and (i[:, :3] >= 0).all()
    d, i = hamming_knn(codes, 6, queries=codes[:2], device="cpu")  # with queries: 4 candidates each
    np.testing.assert_array_equal(i[:, 4:], -1)
    np.testing.assert_array_equal(i[0, 0], 0)
    d, i = hamming_knn(np.zeros(0, np.uint64), 3, queries=codes, device="cpu")
    assert d.shape == (4, 3) and (d == -1).all() and (i == -1).all()
    d, i = hamming_knn(codes, 3, queries=np.zeros(0, np.uint64), device="cpu")
    assert d.shape == (0, 3) and i.shape == (0, 3)


def test_knn_large_database_crosses_tiles():
    db = random_codes(5000, 8)
    queries = np.concatenate([random_codes(30, 9), db[[0, 2047, 2048, 4999]]])
    d, i = hamming_knn(db, 20, queries=queries, device="cpu", num_threads=2)
    want_d, want_i = reference_knn(db, 20, queries)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)


@cpu_and_cuda()
def test_knn_device_parity(device):
    db = clustered_codes(1500, seeds=8, max_flips=6, seed=4)
    d, i = hamming_knn(db, 8, device=device)
    want_d, want_i = reference_knn(db, 8)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(i, want_i)


# ---------------------------------------------------------------- hamming_distance
def test_hamming_distance_broadcasts():
    a = random_codes(5, 1)
    b = random_codes(3, 2) | np.uint64(1 << 63)
    d = hamming_distance(a[:, None], b[None, :])
    assert d.dtype == np.uint8 and d.shape == (5, 3)
    np.testing.assert_array_equal(d, reference_distances(a, b))
    assert hamming_distance(np.uint64(0), np.uint64(2**64 - 1)) == 64
    np.testing.assert_array_equal(hamming_distance(a.view(np.int64), a), 0)


# ---------------------------------------------------------------- misuse
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(3, np.float64),
        np.zeros(3, np.uint32),
        np.zeros((3, 2), np.uint64),
        np.zeros((3, 4), np.uint8),
        ["a", "b"],
    ],
)
def test_bad_codes_raise(bad):
    with pytest.raises((TypeError, ValueError)):
        hamming_pairs(bad, 3, device="cpu")
    with pytest.raises((TypeError, ValueError)):
        hamming_knn(bad, 1, device="cpu")


@pytest.mark.parametrize("r", [-1, 65, 2.0, True, None])
def test_bad_radius_raises(r):
    with pytest.raises((TypeError, ValueError)):
        hamming_pairs(random_codes(10), r, device="cpu")


@pytest.mark.parametrize("k", [0, -3, 1.5, None])
def test_bad_k_raises(k):
    with pytest.raises((TypeError, ValueError)):
        hamming_knn(random_codes(10), k, device="cpu")


def test_other_misuse_raises():
    with pytest.raises(ValueError, match="method"):
        hamming_pairs(random_codes(10), 3, device="cpu", method="lsh")
    with pytest.raises(ValueError, match="num_threads"):
        hamming_pairs(random_codes(10), 3, device="cpu", num_threads=0)
    with pytest.raises(ValueError, match="device"):
        hamming_pairs(random_codes(10), 3, device="tpu")
    with pytest.raises(TypeError):
        hamming_knn(random_codes(10), 2, queries=np.zeros(3, np.float32), device="cpu")
    with pytest.raises(TypeError):
        hamming_distance(np.zeros(2, np.float64), np.zeros(2, np.uint64))
