"""Semantic-balance sampling (Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning: A
Clustering-Based Approach", arXiv:2405.15613) and cluster-size balance statistics.

Hierarchical k-means with resampling (our reading of the paper's Algorithm 1 and its reference code):
  level 1 clusters the data, level i > 1 clusters the centroids of level i-1 (L2 k-means, faiss). After the
  initial k-means of a level, ``n_resamples`` times: take from every cluster the ``r`` points closest to its
  centroid (all of them if fewer), re-run k-means on that union (which over-represents small clusters
  relative to big ones, pulling centroids out of dense regions towards uniform coverage of the data's
  concepts) and re-assign every point of the level to the new centroids. ``r``: the mean cluster size of the
  level, so large clusters are subsampled to it and small ones contribute all of their points.

The data level (level 1, :func:`data_level_kmeans`) is the only one that touches embeddings, and it does so
through an :class:`EmbeddingSource` (:class:`ShardEmbeddings`: embedding shards in memory or on disk, tasks
through a ``map_fn``), so that it runs the same over a matrix in memory and over a run's shards (the balance
stage): its first k-means trains on ``sample_size`` rows (default 256 per cluster, faiss's
own cap; all when fewer) drawn by semantic_stream's id-hash rule; every row is then assigned (nearest
centroid, squared L2) in fixed chunks (faiss's result can depend on how many rows one call gets), and each
resampling step needs only the per-sample (label, distance) arrays plus the embeddings of the selected rows,
gathered by position, with ``r`` capped at ``sample_size // k`` so a refit never trains on more than
``sample_size`` rows. Upper levels cluster centroids (small) in memory.

Balanced sampling down the hierarchy: the target is split across the top-level clusters by water-filling
(every cluster gets the same cap c, the largest with sum(min(c, size)) <= target; clusters smaller than
c give all their points, so their unused share goes to the larger ones; the remaining < #clusters units
go one each to clusters larger than c, chosen by the seed). Each cluster's budget is split the same way
over its children, down to level-1 clusters, where points are picked at random or closest to the centroid.

``method="cap"``: one flat k-means (``levels[0]`` clusters: the data level without resampling) and the same
water-filling cap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmcurate.curate.percentiles import percentile_summary
from mmcurate.index.faiss_index import TRAIN_POINTS_PER_CENTROID

METHODS = ("hierarchical", "cap")
STRATEGIES = ("random", "closest")


# Per-cluster sizes go into the stats (and so the manifest) up to this many clusters; beyond it the
# summary alone keeps the manifest small.
MAX_LISTED_CLUSTER_SIZES = 4096
#: Percentiles of the cluster sizes in cluster_balance_stats (with the mean).
SIZE_PERCENTILES = (0, 10, 25, 50, 75, 90, 99, 100)


def cluster_balance_stats(labels, n_clusters: int | None = None) -> dict:
    """Balance of cluster sizes for the manifest: Gini (0 = equal sizes), entropy (nats), entropy
    normalised by log(#clusters) (1 = equal), #clusters and size percentiles. Clusters are the labels
    present, or 0..n_clusters-1 (empty ones count) when ``n_clusters`` is given.

    With at most ``MAX_LISTED_CLUSTER_SIZES`` (4096) clusters the dict also has ``sizes``: every
    cluster's size (ints, in cluster-id order: sorted labels present, or 0..n_clusters-1), so the report
    can draw the whole distribution from the manifest; with more clusters only the summary."""
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError("labels must be 1-D")
    if n_clusters is not None:
        sizes = np.bincount(lab.astype(np.int64), minlength=int(n_clusters)).astype(np.float64)
    else:
        sizes = np.unique(lab, return_counts=True)[1].astype(np.float64)
    k = sizes.size
    total = sizes.sum()
    listed = {"sizes": sizes.astype(np.int64).tolist()} if k <= MAX_LISTED_CLUSTER_SIZES else {}
    if k == 0 or total == 0:
        return {
            "n_clusters": int(k),
            "n_samples": 0,
            "gini": 0.0,
            "entropy": 0.0,
            "normalized_entropy": 1.0,
            "size_percentiles": {},
            **listed,
        }
    s = np.sort(sizes)
    gini = float((2.0 * np.sum(np.arange(1, k + 1) * s)) / (k * total) - (k + 1.0) / k)
    p = sizes[sizes > 0] / total
    ent = float(-np.sum(p * np.log(p)))
    pct = percentile_summary(sizes, SIZE_PERCENTILES)
    return {
        "n_clusters": int(k),
        "n_samples": int(total),
        "gini": max(gini, 0.0),
        "entropy": ent,
        "normalized_entropy": float(ent / np.log(k)) if k > 1 else 1.0,
        "size_percentiles": pct,
        **listed,
    }


def water_fill(sizes, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Integer allocation <= sizes summing to min(budget, sum(sizes)), as equal as the sizes allow."""
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(budget)
    if budget >= sizes.sum():
        return sizes.copy()
    lo, hi = 0, int(sizes.max())  # invariant: sum(min(lo)) <= budget < sum(min(hi))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if np.minimum(sizes, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid
    alloc = np.minimum(sizes, lo)
    rem = budget - int(alloc.sum())
    if rem:
        cand = np.flatnonzero(sizes > lo)  # len(cand) > rem because sum(min(lo + 1)) > budget
        alloc[np.sort(rng.choice(cand, rem, replace=False))] += 1
    return alloc


def _init_for(n: int, k: int) -> str:
    # k-means++ (as the paper's code) where it is cheap: it is sequential, one pass over the training rows per
    # centroid (n * k * d * 8 bytes of memory traffic), so it serves the small upper levels (clustering
    # centroids, where random init often puts several seeds in one dense group); faiss's random init elsewhere.
    return "kmeans++" if min(n, TRAIN_POINTS_PER_CENTROID * k) * k <= 4_000_000 else "random"


def _fit_l2(rows: np.ndarray, k: int, seed: int, niter: int, device: str) -> np.ndarray:
    """L2 k-means trained on every one of ``rows`` (no further subsampling by faiss or mindex)."""
    from mmcurate import index as mindex

    s = int(rows.shape[0])
    centroids, _ = mindex.kmeans(
        rows,
        k,
        niter=niter,
        spherical=False,
        seed=seed,
        device=device,
        init=_init_for(s, k),
        max_points_per_centroid=-(-s // k),
    )
    return centroids


def _closest_per_cluster(labels: np.ndarray, dist: np.ndarray, k: int, r: int) -> np.ndarray:
    """Ascending positions of the ``r`` points of every cluster closest to its centroid (ties: lower position)."""
    order = np.lexsort((dist, labels))  # by cluster, then closest to the centroid first, then position
    starts = np.searchsorted(labels[order], np.arange(k))
    rank = np.arange(order.size) - np.repeat(starts, np.bincount(labels, minlength=k))
    return np.sort(order[rank < r])


def _kmeans_resampled(x, k, n_resamples, sample_size, device, seed, niter):
    """An upper level (x: the level below's centroids, small): k-means with resampling, all in memory."""
    from mmcurate import index as mindex

    centroids, labels = mindex.kmeans(
        x, k, niter=niter, spherical=False, seed=seed, device=device, init=_init_for(x.shape[0], k)
    )
    for t in range(n_resamples):
        _, dist = mindex.assign(x, centroids, metric="l2", device=device)
        r = sample_size if sample_size is not None else max(1, x.shape[0] // k)
        sample = _closest_per_cluster(labels, dist, k, r)
        if sample.size < k:
            break
        centroids, _ = mindex.kmeans(
            x[sample], k, niter=niter, spherical=False, seed=seed + t + 1, device=device, init=_init_for(sample.size, k)
        )
        labels, _ = mindex.assign(x, centroids, metric="l2", device=device)
    return centroids, labels


# ------------------------------------------------------------------------------------------ the data level


class EmbeddingSource:
    """What the data level needs of the embeddings: ``n`` rows at positions 0..n-1 with unique sample ``ids``
    (int64[n]); ``gather(positions)`` their rows (float32, in the order given); ``assign(centroids, device)``
    the nearest centroid by squared L2 of every row, ``(labels int32[n], dist float32[n])``, computed in the
    chunks the implementation fixes (:class:`ShardEmbeddings`: per shard, ``chunk_rows`` at a time)."""

    n: int
    ids: np.ndarray

    def gather(self, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def assign(self, centroids: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def assign_l2_chunk(x: np.ndarray, centroids: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels int32, squared L2 float32) of one chunk in one faiss call (its kernel depends on the row count,
    so every source calls this on fixed chunks)."""
    from mmcurate import index as mindex

    labels, dist = mindex.assign(x, centroids, metric="l2", device=device, chunk_size=max(int(x.shape[0]), 1))
    return labels.astype(np.int32), dist


class ShardEmbeddings(EmbeddingSource):
    """The rows of :class:`~mmcurate.curate.semantic_stream.EmbeddingShard` s, positions running through the
    shards in order, ``ids`` one per row. Assignment is one ``map_fn`` task per shard streaming ``chunk_rows``
    rows at a time (the chunks fix faiss's result, so a source over the same shards gives the same labels
    whatever runs the tasks); gather is one task per shard holding any of the rows asked for. The caller holds
    the ids and what it asked to gather, never the embeddings of shards on disk."""

    def __init__(self, shards, ids, map_fn: Callable = map, chunk_rows: int | None = None):
        from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS

        self.shards, self.map_fn = list(shards), map_fn
        self.chunk_rows = int(DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows)
        self.ids = np.asarray(ids, np.int64)
        self.n = int(self.ids.size)
        self.starts = np.cumsum([0] + [sh.count for sh in self.shards])
        if self.starts[-1] != self.n or self.ids.shape != (self.n,):
            raise ValueError(
                f"ids must be int[{int(self.starts[-1])}], one per row of the shards, got {self.ids.shape}"
            )
        self.dim = self.shards[0].dim if self.shards else 0
        self.gathered_rows = 0  # the most rows one gather held (reported; a test bounds it)

    def gather(self, positions):
        positions = np.asarray(positions, np.int64)
        out = np.empty((positions.size, self.dim), np.float32)
        shard = np.searchsorted(self.starts, positions, side="right") - 1
        tasks, where = [], []
        for j in np.unique(shard):
            sel = np.flatnonzero(shard == j)
            sel = sel[np.argsort(positions[sel], kind="stable")]
            tasks.append((self.shards[int(j)], positions[sel] - self.starts[j]))
            where.append(sel)
        for sel, rows in zip(where, self.map_fn(_take_task, tasks)):
            out[sel] = rows
        self.gathered_rows = max(self.gathered_rows, int(positions.size))
        return out

    def assign(self, centroids, device):
        parts = list(self.map_fn(_assign_task, [(sh, centroids, device, self.chunk_rows) for sh in self.shards]))
        if not parts:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _assign_task(task):
    """One shard's rows streamed chunk_rows at a time: (labels int32, squared L2 float32) to the centroids."""
    shard, centroids, device, chunk_rows = task
    parts = [assign_l2_chunk(x, centroids, device) for _, x in shard.chunks(chunk_rows)]
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _take_task(task):
    shard, rows = task
    return shard.take(rows)


def in_memory_embeddings(x, ids=None) -> ShardEmbeddings:
    """A float [n, d] matrix in this process as one shard (``ids``: the rows' sample ids, default 0..n-1)."""
    from mmcurate.curate.semantic_stream import EmbeddingShard

    ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    return ShardEmbeddings([EmbeddingShard.from_array(x, ids)], ids)


def hash_sample_positions(ids: np.ndarray, s: int, seed: int) -> np.ndarray:
    """Positions of the ``s`` ids with the smallest semantic_stream.id_hash, in ascending id order: the same
    sample as semantic_stream.sample_ids, whichever way the rows are split or ordered."""
    from mmcurate.curate.semantic_stream import id_hash

    ids = np.asarray(ids, np.int64)
    if s >= ids.size:
        pos = np.arange(ids.size)
    else:
        h = id_hash(ids, seed)
        pos = np.flatnonzero(h <= np.partition(h, s - 1)[s - 1])
    return pos[np.argsort(ids[pos], kind="stable")]


def data_sample_size(n: int, k: int, sample_size: int | None) -> int:
    """Rows the data level's k-means trains on: ``sample_size`` (null: 256 per cluster), at most n, at least k."""
    s = TRAIN_POINTS_PER_CENTROID * k if sample_size is None else int(sample_size)
    return int(min(n, max(s, k)))


def data_level_kmeans(
    source: EmbeddingSource,
    k: int,
    n_resamples: int = 3,
    sample_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    niter: int = 20,
):
    """Level 1 of the hierarchy over ``source``: ``(centroids float32[k, d], labels int32[n], dist float32[n])``
    (dist: squared L2 to the row's centroid). k-means on the id-hash sample, every row assigned; then
    ``n_resamples`` times: the ``r`` closest rows of every cluster (r = mean cluster size, at most
    sample_size // k) gathered, k-means refit on them (seed + t + 1), every row reassigned. Holds the sample
    (at most ``sample_size`` rows) and 8 bytes per row (label, distance) besides what the source holds."""
    n = int(source.n)
    k = max(1, min(int(k), n))
    s = data_sample_size(n, k, sample_size)
    centroids = _fit_l2(source.gather(hash_sample_positions(source.ids, s, seed)), k, seed, niter, device)
    labels, dist = source.assign(centroids, device)
    r = max(1, min(n // k, s // k))
    for t in range(int(n_resamples)):
        chosen = _closest_per_cluster(labels, dist, k, r)
        if chosen.size < k:
            break
        centroids = _fit_l2(source.gather(chosen), k, seed + t + 1, niter, device)
        del chosen
        labels, dist = source.assign(centroids, device)
    return centroids, labels, dist


def hierarchical_kmeans(
    emb,
    levels=(1000, 100),
    n_resamples: int = 3,
    sample_size=None,
    device="auto",
    seed: int = 0,
    niter: int = 20,
    ids=None,
):
    """List of per-level ``(centroids, labels)``; level 0's labels index the data rows, level i's labels
    index level i-1's centroids. Each level's k is capped at the number of its input points. Level 0 is
    :func:`data_level_kmeans` (``sample_size``: its k-means sample, null for 256 per cluster; ``ids``: the
    rows' sample ids, for the id-hash sample)."""
    from mmcurate import index as mindex
    from mmcurate.index.faiss_index import as_matrix

    dev = mindex.resolve_device(device)
    c, lab, _ = data_level_kmeans(
        in_memory_embeddings(as_matrix(emb, "emb"), ids), levels[0], n_resamples, sample_size, dev, seed, niter
    )
    return [(c, lab)] + upper_levels(c, levels[1:], n_resamples, dev, seed, niter)


def upper_levels(centroids, levels, n_resamples: int, device: str, seed: int, niter: int):
    """Levels 2.. (``levels``: their cluster counts) over the data level's centroids, as (centroids, labels)."""
    out = []
    x = centroids
    for i, k in enumerate(levels, start=1):
        k = max(1, min(int(k), x.shape[0]))
        c, lab = _kmeans_resampled(x, k, int(n_resamples), None, device, seed + 1000 * i, niter)
        out.append((c, lab))
        x = c
    return out


# ------------------------------------------------------------------------------------------ selection


def _pick(members, count, dist, strategy, rng):
    if count >= members.size:
        return members
    if strategy == "random":
        return rng.choice(members, count, replace=False)
    return members[np.lexsort((members, dist[members]))[:count]]


def _check_args(method, strategy, levels, target):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    levels = tuple(int(k) for k in levels)
    if not levels or min(levels) < 1:
        raise ValueError(f"levels must be a non-empty sequence of positive cluster counts, got {levels}")
    target = int(target)
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    return levels, target


def balanced_sample_from(
    source: EmbeddingSource,
    target: int,
    levels=(1000, 100),
    device: str = "cpu",
    seed: int = 0,
    method: str = "hierarchical",
    strategy: str = "random",
    n_resamples: int = 3,
    sample_size: int | None = None,
    niter: int = 20,
):
    """:func:`balanced_sample` over an :class:`EmbeddingSource` (``device`` already resolved):
    ``(positions int64 sorted, top_labels int64[n], n_top)``. Only the data level reads embeddings (through
    the source); everything after it uses the per-row leaf labels (and distances for "closest")."""
    levels, target = _check_args(method, strategy, levels, target)
    n = int(source.n)
    rng = np.random.default_rng(seed)
    leaf_c, leaf, dist = data_level_kmeans(
        source, levels[0], int(n_resamples) if method == "hierarchical" else 0, sample_size, device, seed, niter
    )
    hier = [(leaf_c, leaf)]
    if method == "hierarchical":
        hier += upper_levels(leaf_c, levels[1:], n_resamples, device, seed, niter)

    # flat sizes: number of data points under each cluster of each level
    data_labels = [leaf]
    for _, lab in hier[1:]:
        data_labels.append(lab[data_labels[-1]])
    flat = [np.bincount(dl, minlength=c.shape[0]) for (c, _), dl in zip(hier, data_labels)]
    top_labels, n_top = data_labels[-1].astype(np.int64), int(hier[-1][0].shape[0])
    del data_labels
    if target >= n or target == 0:
        out = np.arange(n, dtype=np.int64) if target >= n else np.zeros(0, np.int64)
        return out, top_labels, n_top

    top = len(hier) - 1
    alloc = water_fill(flat[top], target, rng)
    for lvl in range(top - 1, -1, -1):  # split each parent's budget over its children
        parent_of = hier[lvl + 1][1]
        child_alloc = np.zeros(flat[lvl].size, np.int64)
        order = np.argsort(parent_of, kind="stable")
        bounds = np.searchsorted(parent_of[order], np.arange(flat[lvl + 1].size + 1))
        for p in np.flatnonzero(alloc):
            kids = order[bounds[p] : bounds[p + 1]]
            child_alloc[kids] = water_fill(flat[lvl][kids], alloc[p], rng)
        alloc = child_alloc

    order = np.argsort(leaf, kind="stable")
    bounds = np.searchsorted(leaf[order], np.arange(leaf_c.shape[0] + 1))
    picked = [
        _pick(order[bounds[c] : bounds[c + 1]], int(alloc[c]), dist, strategy, rng) for c in np.flatnonzero(alloc)
    ]
    out = np.sort(np.concatenate(picked)).astype(np.int64)
    assert out.size == target, (out.size, target)  # water_fill allocations never exceed a cluster
    return out, top_labels, n_top


def balanced_sample(
    emb,
    target: int,
    levels=(1000, 100),
    device: str = "auto",
    seed: int = 0,
    method: str = "hierarchical",
    strategy: str = "random",
    n_resamples: int = 3,
    sample_size=None,
    niter: int = 20,
    return_clusters: bool = False,
    ids=None,
):
    """Sorted unique int64 indices of ``min(target, n)`` samples, balanced over semantic clusters
    (see the module docstring). ``strategy`` picks points within leaf clusters: "random" or "closest".
    ``sample_size``: rows the data level's k-means trains on (null: 256 per cluster); ``ids``: the
    rows' sample ids (for the id-hash sample).
    With ``return_clusters`` also returns each sample's top-level cluster and the number of top-level
    clusters, ``(indices, top_labels int64[n], n_top)``, so callers need not cluster again for stats."""
    from mmcurate import index as mindex
    from mmcurate.index.faiss_index import as_matrix

    levels, target = _check_args(method, strategy, levels, target)
    x = as_matrix(emb, "emb")
    n = x.shape[0]
    if not return_clusters:
        if target >= n:
            return np.arange(n, dtype=np.int64)
        if target == 0:
            return np.zeros(0, np.int64)
    out = balanced_sample_from(
        in_memory_embeddings(x, ids),
        target,
        levels,
        mindex.resolve_device(device),
        seed,
        method,
        strategy,
        n_resamples,
        sample_size,
        niter,
    )
    return out if return_clusters else out[0]
