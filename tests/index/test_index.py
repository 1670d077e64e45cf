"""mmcurate.index against numpy brute force; IVF recall vs flat; validation and device resolution."""

import warnings

import numpy as np
import pytest

from mmcurate import index as mi


def clustered(n, d, c, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((c, d))
    x = cent[rng.integers(0, c, n)] + noise * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_kmeans_and_streaming_assign():
    x = clustered(5000, 32, 20)
    c, lab = mi.kmeans(x, 20, device="cpu", seed=1)
    assert c.shape == (20, 32) and c.dtype == np.float32 and lab.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)  # spherical
    np.testing.assert_array_equal(lab, np.argmax(x @ c.T, axis=1))
    c2, lab2 = mi.kmeans(x, 20, device="cpu", seed=1)
    np.testing.assert_array_equal(lab, lab2)
    l1, s1 = mi.assign(x, c, device="cpu", chunk_size=777)
    l2, s2 = mi.assign([x[:1000], x[1000:]], c, device="cpu")
    np.testing.assert_array_equal(l1, lab)
    np.testing.assert_array_equal(l2, lab)
    np.testing.assert_allclose(s1, np.max(x @ c.T, axis=1), rtol=1e-5)
    ll, dl = mi.assign(x, c, metric="l2", device="cpu")
    ref = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ll, ref.argmin(1))
    np.testing.assert_allclose(dl, ref.min(1), atol=1e-4)


def test_kmeans_subsamples_memmap(tmp_path):
    x = clustered(6000, 16, 10, seed=2)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    c, lab = mi.kmeans(mm, 10, device="cpu", max_points_per_centroid=100, init="kmeans++")
    assert lab.shape == (6000,) and np.bincount(lab, minlength=10).min() > 0


def test_knn_flat_exact():
    x = clustered(2000, 24, 10, seed=3)
    q = x[:100]
    r = mi.knn(x, 5, queries=q, device="cpu")
    s = q @ x.T
    np.testing.assert_allclose(r.distances, -np.sort(-s, axis=1)[:, :5], rtol=1e-5)
    assert (r.indices[:, 0] == np.arange(100)).all()
    r2 = mi.knn(x, 5, queries=q, metric="l2", device="cpu", chunk_size=17)
    d2 = ((q[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(r2.distances, np.sort(d2, axis=1)[:, :5], atol=1e-4)


@pytest.mark.parametrize("noise", [0.3, 0.8])
def test_ivf_recall_at_default_nprobe(noise):
    x = clustered(40000, 32, 100, seed=4, noise=noise)
    q = x[:1000]
    flat = mi.knn(x, 10, queries=q, device="cpu")
    ivf = mi.knn(x, 10, queries=q, index="ivf", device="cpu")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(flat.indices, ivf.indices)])
    assert recall >= 0.95, recall


def test_range_search():
    x = clustered(1500, 16, 5, seed=5)
    lims, D, I = mi.range_search(x, 0.9, queries=x[:50], device="cpu")
    s = x[:50] @ x.T
    assert lims.size == 51
    for i in range(50):
        got = set(I[lims[i] : lims[i + 1]].tolist())
        assert set(np.flatnonzero(s[i] > 0.9 + 1e-5)) <= got <= set(np.flatnonzero(s[i] > 0.9 - 1e-5))
    assert (D > 0.9 - 1e-5).all()


def test_validation_and_device():
    with pytest.raises(ValueError, match="2-D"):
        mi.knn(np.zeros(5, np.float32), 1, device="cpu")
    with pytest.raises(TypeError):
        mi.knn(np.zeros((5, 2), np.int64), 1, device="cpu")
    bad = np.ones((5, 2), np.float32)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        mi.assign(bad, np.ones((2, 2), np.float32), device="cpu")
    with pytest.raises(ValueError, match="dimension"):
        mi.assign(np.ones((5, 3), np.float32), np.ones((2, 2), np.float32), device="cpu")
    with pytest.raises(ValueError, match="k="):
        mi.kmeans(np.ones((5, 3), np.float32), 6, device="cpu")
    with pytest.raises(ValueError, match="device"):
        mi.resolve_device("tpu")
    import faiss

    if faiss.get_num_gpus() == 0:
        assert mi.resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="faiss-gpu"):
            mi.resolve_device("cuda")
    # float64 and Fortran order are accepted and converted
    x = np.asfortranarray(clustered(300, 8, 3).astype(np.float64))
    assert mi.knn(x, 2, device="cpu").indices.shape == (300, 2)


@pytest.mark.needs_cuda
def test_gpu_matches_cpu_and_falls_back():
    import faiss

    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss build without GPUs")
    x = clustered(5000, 32, 10)
    a, b = mi.knn(x, 8, device="cpu"), mi.knn(x, 8, device="cuda")
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = mi.knn(x, 3000, queries=x[:4], device="cuda")
    assert r.indices.shape == (4, 3000) and any(issubclass(i.category, mi.GpuFallbackWarning) for i in w)
