"""k-means, assignment, kNN and range search through faiss, on the CPU or a GPU (see the package docstring).

faiss is imported on first use, so importing this module costs nothing and initialises no GPU.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from mmcurate.device import check_device, choose_device

#: faiss's cap on k-means training points per centroid: the default k-means sample of every step that clusters
#: (kmeans, the IVF training sample, semantic_dedup, balance) is this many rows per cluster.
TRAIN_POINTS_PER_CENTROID = 256

log = logging.getLogger(__name__)

# faiss-GPU's block select supports k (and nprobe) up to 2048 (GPU_MAX_SELECTION_K in faiss/gpu/utils).
GPU_MAX_SELECTION_K = 2048
METRICS = ("ip", "l2")
DEFAULT_CHUNK = 65536


class GpuFallbackWarning(UserWarning):
    """A call asked for the GPU (explicitly or via "auto") but ran on the CPU because of a faiss-GPU limit."""


def _faiss():
    import faiss  # deferred: importing mmcurate.index must not load faiss or touch a GPU

    return faiss


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when faiss sees a GPU, else "cpu". "cuda" without a GPU build/GPU is an error (the
    rule is mmcurate.device's). A valid device loads faiss, "cpu" included (benchmarks call it for that)."""
    check_device(device)
    faiss = _faiss()
    return choose_device(
        device,
        lambda: faiss.get_num_gpus() > 0,
        lambda: (
            "device='cuda' but faiss sees no GPU: install faiss-gpu (instead of faiss-cpu) "
            "on a machine with a CUDA GPU, or pass device='cpu'/'auto'"
        ),
    )


def _fallback(reason: str) -> str:
    msg = f"faiss-GPU limit: {reason}; running this call on the CPU"
    log.warning(msg)
    warnings.warn(msg, GpuFallbackWarning, stacklevel=3)
    return "cpu"


_GPU_RESOURCES = None


def _gpu_resources():
    # One StandardGpuResources per process: it owns temp memory and streams, costly to create.
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = _faiss().StandardGpuResources()
    return _GPU_RESOURCES


def _to_device(index, device: str):
    """A search index on the GPU(s). With several GPUs the index is replicated on all of them and queries are
    split between them (faiss.index_cpu_to_all_gpus), matching faiss.Kmeans(gpu=True), which trains on every
    GPU it sees: multi-GPU k-means and assignment need nothing more than more GPUs."""
    if device == "cuda":
        faiss = _faiss()
        if faiss.get_num_gpus() > 1:
            return faiss.index_cpu_to_all_gpus(index)
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return index


def as_matrix(x, name: str = "x", d: int | None = None, check_finite: bool = True) -> np.ndarray:
    """Validate a 2-D real float matrix and return it as C-contiguous float32 (no copy when it already is)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a float array (float32 preferred), got dtype {a.dtype}")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{name} has dimension {a.shape[1]}, expected {d}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has zero columns")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if check_finite and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _iter_chunks(x, chunk_size: int):
    """Rows of x in chunks: x is an array/memmap (sliced lazily) or an iterable of 2-D chunks."""
    if hasattr(x, "shape") and hasattr(x, "__getitem__"):
        for s in range(0, x.shape[0], chunk_size):
            yield x[s : s + chunk_size]
    else:
        yield from x


# ----------------------------------------------------------------------------------------- k-means


def kmeans(
    x,
    k: int,
    niter: int = 20,
    spherical: bool = True,
    seed: int = 0,
    device: str = "auto",
    max_points_per_centroid: int = TRAIN_POINTS_PER_CENTROID,
    chunk_size: int = DEFAULT_CHUNK,
    init: str = "random",
):
    """k-means with ``faiss.Kmeans``. Returns ``(centroids float32[k, d], assign int64[n])``.

    Training uses at most ``k * max_points_per_centroid`` rows, drawn by ``seed`` and gathered here, so a
    memmap larger than memory is never loaded whole; every row is then assigned by streaming over chunks.
    ``init="random"`` is faiss's own (k distinct training rows); ``"kmeans++"`` seeds by D^2 sampling on
    the training rows (O(n_train * k * d) in numpy: use it for small levels, e.g. clustering centroids,
    where random init often leaves several centroids in one dense group).
    ``spherical=True`` renormalises the centroids each iteration and assigns by inner product (use it on
    L2-normalised embeddings); otherwise assignment is by L2 distance.
    """
    n = int(x.shape[0]) if hasattr(x, "shape") else None
    if n is None or len(x.shape) != 2:
        raise ValueError("x must be a 2-D array or memmap [n, d]")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} clusters need at least k points, got n={n}")
    dev = resolve_device(device)
    rng = np.random.default_rng(seed)
    n_train = min(n, k * int(max_points_per_centroid))
    idx = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else None
    train = as_matrix(x[idx] if idx is not None else x[:], "x")
    faiss = _faiss()
    km = faiss.Kmeans(
        train.shape[1],
        k,
        niter=int(niter),
        spherical=bool(spherical),
        seed=int(seed),
        # gpu=True: faiss trains on every visible GPU (index_cpu_to_all_gpus)
        gpu=(dev == "cuda"),
        max_points_per_centroid=int(max_points_per_centroid),
        verbose=False,
    )
    if init == "kmeans++":
        km.train(train, init_centroids=kmeans_plusplus(train, k, seed))
    elif init == "random":
        km.train(train)
    else:
        raise ValueError(f"init must be 'random' or 'kmeans++', got {init!r}")
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    labels, _ = assign(x, centroids, metric="ip" if spherical else "l2", device=dev, chunk_size=chunk_size)
    return centroids, labels


def kmeans_plusplus(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid drawn with probability
    proportional to the squared distance to the nearest centroid chosen so far."""
    rng = np.random.default_rng(seed)
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    centers = np.empty((k, x.shape[1]), np.float32)
    i = int(rng.integers(x.shape[0]))
    centers[0] = x[i]
    # 2 * (x @ c), not (2 * x) @ c: the latter copies the whole matrix every step (x2 is exact either way)
    d2 = np.maximum(sq - 2 * (x64 @ x64[i]) + sq[i], 0)
    for j in range(1, k):
        tot = d2.sum()
        i = int(rng.choice(x.shape[0], p=d2 / tot)) if tot > 0 else int(rng.integers(x.shape[0]))
        centers[j] = x[i]
        d2 = np.minimum(d2, np.maximum(sq - 2 * (x64 @ x64[i]) + sq[i], 0))
    return centers


def assign(x, centroids, metric: str = "ip", device: str = "auto", chunk_size: int = DEFAULT_CHUNK):
    """Nearest centroid of every row: ``(labels int64[n], scores float32[n])``.

    ``metric="ip"``: the largest inner product (score = similarity); ``"l2"``: the smallest squared L2
    distance (score = distance). ``x`` is an array, a memmap or an iterable of 2-D chunks; it is streamed
    ``chunk_size`` rows at a time, so only the centroids and one chunk are resident.
    """
    _check_metric(metric)
    c = as_matrix(centroids, "centroids")
    dev = resolve_device(device)
    faiss = _faiss()
    index = faiss.IndexFlatIP(c.shape[1]) if metric == "ip" else faiss.IndexFlatL2(c.shape[1])
    index.add(c)
    index = _to_device(index, dev)
    labels, scores = [], []
    for chunk in _iter_chunks(x, int(chunk_size)):
        q = as_matrix(chunk, "x", d=c.shape[1])
        if q.shape[0] == 0:
            continue
        D, I = index.search(q, 1)
        labels.append(I[:, 0].astype(np.int64))
        scores.append(D[:, 0])
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(scores).astype(np.float32)


# --------------------------------------------------------------------------------------- kNN search


@dataclass
class KnnResult:
    """``distances[i, j]``: similarity (ip) or squared L2 distance (l2) of query i to its j-th neighbour
    ``indices[i, j]`` (-1 where fewer than k were found, e.g. IVF with few probed lists)."""

    distances: np.ndarray  # float32[nq, k]
    indices: np.ndarray  # int64[nq, k]


def default_ivf_params(n: int) -> tuple[int, int]:
    """(nlist, nprobe) for ``n`` database vectors: nlist ~ 4*sqrt(n) with >= 39 training points per list
    (faiss's minimum), nprobe = nlist/8. At these defaults kNN recall@10 vs flat is >= 0.95 on clustered
    data (tested); raise nprobe for more recall on unclustered data."""
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
    nprobe = max(1, min(nlist, nlist // 8 or 1))
    return nlist, nprobe


def _build(xb: np.ndarray, metric: str, kind: str, nlist: int | None, nprobe: int | None, seed: int):
    faiss = _faiss()
    d = xb.shape[1]
    mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if kind == "flat":
        index = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
        index.add(xb)
        return index, None
    dn, dp = default_ivf_params(xb.shape[0])
    nlist = dn if nlist is None else int(nlist)
    nprobe = dp if nprobe is None else int(nprobe)
    if not 1 <= nlist <= xb.shape[0]:
        raise ValueError(f"nlist must be in [1, n={xb.shape[0]}], got {nlist}")
    quantizer = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, mt)
    index.cp.seed = int(seed)
    rng = np.random.default_rng(seed)
    n_train = min(xb.shape[0], TRAIN_POINTS_PER_CENTROID * nlist)  # faiss's own sampling cap, drawn by our seed
    train = xb if n_train == xb.shape[0] else xb[np.sort(rng.choice(xb.shape[0], n_train, replace=False))]
    index.train(train)
    index.add(xb)
    index.nprobe = max(1, min(nprobe, nlist))
    return index, index.nprobe


def knn(
    x,
    k: int,
    queries=None,
    metric: str = "ip",
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    device: str = "auto",
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
) -> KnnResult:
    """k nearest neighbours in ``x`` of every query row (``queries=None``: x itself, each row finding
    itself first). ``index="flat"`` is exact; ``"ivf"`` (IVF-Flat, see :func:`default_ivf_params`) is
    approximate and much faster for large n. Queries are searched ``chunk_size`` rows at a time."""
    _check_metric(metric)
    if index not in ("flat", "ivf"):
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    xb = as_matrix(x, "x")
    k = int(k)
    if not 1 <= k <= xb.shape[0]:
        raise ValueError(f"k must be in [1, n={xb.shape[0]}], got {k}")
    q = xb if queries is None else as_matrix(queries, "queries", d=xb.shape[1])
    dev = resolve_device(device)
    idx, probes = _build(xb, metric, index, nlist, nprobe, seed)
    if dev == "cuda" and k > GPU_MAX_SELECTION_K:
        dev = _fallback(f"k={k} > {GPU_MAX_SELECTION_K}")
    if dev == "cuda" and probes is not None and probes > GPU_MAX_SELECTION_K:
        dev = _fallback(f"nprobe={probes} > {GPU_MAX_SELECTION_K}")
    idx = _to_device(idx, dev)
    if dev == "cuda" and probes is not None:
        idx.nprobe = probes  # GPU clones may not carry nprobe over
    D = np.empty((q.shape[0], k), np.float32)
    I = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], int(chunk_size)):
        D[s : s + chunk_size], I[s : s + chunk_size] = idx.search(q[s : s + chunk_size], k)
    return KnnResult(D, I)


def range_search(x, radius: float, queries=None, metric: str = "ip", device: str = "auto"):
    """All neighbours within ``radius`` (exact, flat index): ``(lims int64[nq+1], distances, indices)``,
    query i's results being ``indices[lims[i]:lims[i+1]]``. For "ip" a result has similarity > radius,
    for "l2" squared distance < radius (faiss's convention). faiss-GPU flat indexes have no range search,
    so a GPU request runs on the CPU with a :class:`GpuFallbackWarning`."""
    _check_metric(metric)
    xb = as_matrix(x, "x")
    q = xb if queries is None else as_matrix(queries, "queries", d=xb.shape[1])
    if resolve_device(device) == "cuda":
        _fallback("range_search is not implemented for GPU indexes")
    idx, _ = _build(xb, metric, "flat", None, None, 0)
    lims, D, I = idx.range_search(q, float(radius))
    return lims.astype(np.int64), D.astype(np.float32), I.astype(np.int64)
