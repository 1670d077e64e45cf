"""semantic_dedup against an O(n^2) brute-force oracle of the same rule on the same clusters."""

import sys

import numpy as np
import pytest

from mmcurate import curate
from mmcurate.curate.semantic import block_max_similarity, block_max_similarity_torch


def planted(n_base=600, d=32, n_dup=300, seed=0):
    """Random unit vectors plus near-duplicates at a spread of noise levels (some inside eps, some not)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_base, d))
    src = rng.integers(0, n_base, n_dup)
    noise = rng.uniform(0.0, 0.6, n_dup)[:, None] * rng.standard_normal((n_dup, d)) / np.sqrt(d)
    x = np.concatenate([base, base[src] + noise * np.linalg.norm(base[src], axis=1, keepdims=True)])
    x = x[rng.permutation(len(x))]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def oracle(x, cluster, centroids, eps, keep, seed=0):
    """Per cluster: rank members by the keep policy, full float64 cosine matrix, duplicate iff an
    earlier-ranked member has cosine >= 1 - eps; partner = most similar earlier member (earliest on ties)."""
    n = len(x)
    keep_mask = np.ones(n, bool)
    dup_of = np.full(n, -1, np.int64)
    perm = np.random.default_rng(seed).permutation(n)
    for c in np.unique(cluster):
        m = np.flatnonzero(cluster == c)
        cos_c = x[m].astype(np.float64) @ centroids[c].astype(np.float64)
        if isinstance(keep, str):
            key = {"hard": cos_c, "easy": -cos_c, "random": perm[m].astype(float)}[keep]
        else:
            key = -keep[m]
        m = m[np.lexsort((m, key))]
        s = x[m].astype(np.float64) @ x[m].astype(np.float64).T
        for j in range(1, len(m)):
            prev = s[:j, j]
            if prev.max() >= 1 - eps:
                keep_mask[m[j]] = False
                dup_of[m[j]] = m[int(np.argmax(prev))]
    return keep_mask, dup_of


@pytest.mark.parametrize("keep", ["hard", "easy", "random", "scores"])
def test_matches_bruteforce(keep):
    x = planted()
    policy = np.random.default_rng(5).random(len(x)) if keep == "scores" else keep
    r = curate.semantic_dedup(x, eps=0.05, n_clusters=8, keep=policy, device="cpu", seed=3, block=64)
    assert r.keep.dtype == bool and r.duplicate_of.dtype == np.int64 and r.cluster.dtype == np.int32
    k, d = oracle(x, r.cluster, r.centroids, 0.05, policy, seed=3)
    assert 50 < (~k).sum() < 300  # the planted duplicates inside eps are found, the far ones are not
    np.testing.assert_array_equal(r.keep, k)
    np.testing.assert_array_equal(r.duplicate_of, d)


def test_block_size_does_not_matter_and_torch_twin():
    x = planted(n_base=300, n_dup=200, seed=1)
    v1, a1 = block_max_similarity(x, block=7)
    v2, a2 = block_max_similarity(x, block=1000)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(v1, v2, atol=1e-6)
    torch = pytest.importorskip("torch")
    v3, a3 = block_max_similarity_torch(torch.from_numpy(x), block=33)
    np.testing.assert_array_equal(a1, a3)
    np.testing.assert_allclose(v1, v3, atol=1e-6)


def test_exact_copies_keep_one_and_representative():
    rng = np.random.default_rng(2)
    b = rng.standard_normal((50, 16))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    x = np.concatenate([b, b, b]).astype(np.float32)
    r = curate.semantic_dedup(x, eps=0.01, n_clusters=4, device="cpu")
    assert r.keep.sum() == 50
    rep = r.representative
    assert r.keep[rep].all()
    np.testing.assert_array_equal(rep[:50], rep[50:100])
    np.testing.assert_array_equal(rep[:50], rep[100:])
    # the witness is within eps of its duplicate
    dup = np.flatnonzero(~r.keep)
    assert (np.einsum("ij,ij->i", x[dup], x[r.duplicate_of[dup]]) >= 0.99 - 1e-6).all()


def test_eps_sweep_is_monotone_and_consistent():
    x = planted(seed=4)
    r = curate.semantic_dedup(x, eps=0.05, n_clusters=6, device="cpu")
    np.testing.assert_array_equal(r.keep_at(0.05), r.keep)
    r2 = curate.semantic_dedup(x, eps=0.1, n_clusters=6, device="cpu")
    np.testing.assert_array_equal(r2.keep, r.keep_at(0.1))
    assert r.keep_at(0.1).sum() <= r.keep.sum() <= r.keep_at(0.01).sum()


def test_memmap_input(tmp_path):
    x = planted(n_base=200, n_dup=100, seed=6)
    mm = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    a = curate.semantic_dedup(np.load(tmp_path / "e.npy", mmap_mode="r"), n_clusters=4, device="cpu")
    b = curate.semantic_dedup(x, n_clusters=4, device="cpu")
    np.testing.assert_array_equal(a.keep, b.keep)
    np.testing.assert_array_equal(a.duplicate_of, b.duplicate_of)


def test_validation():
    x = planted(n_base=50, n_dup=10)
    with pytest.raises(ValueError, match="L2-normalised"):
        curate.semantic_dedup(x * 2, device="cpu")
    with pytest.raises(ValueError, match="eps"):
        curate.semantic_dedup(x, eps=0, device="cpu")
    with pytest.raises(ValueError, match="eps"):
        curate.semantic_dedup(x, eps=1.5, device="cpu")
    with pytest.raises(ValueError, match="keep"):
        curate.semantic_dedup(x, keep="nope", device="cpu")
    with pytest.raises(ValueError, match="2-D"):
        curate.semantic_dedup(x[0], device="cpu")
    with pytest.raises(TypeError):
        curate.semantic_dedup(np.ones((4, 4), np.int32), device="cpu")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        curate.semantic_dedup(bad, device="cpu")


def test_lazy_exports_import_no_faiss_or_torch():
    import subprocess

    code = (
        "import sys, mmcurate.curate as c; assert 'faiss' not in sys.modules and 'torch' not in sys.modules;"
        "c.assign_splits; assert 'faiss' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
