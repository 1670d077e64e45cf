"""Semantic-balance sampling (Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning: A
Clustering-Based Approach", arXiv:2405.15613) and cluster-size balance statistics.

Hierarchical k-means with resampling (our reading of the paper's Algorithm 1 and its reference code):
  level 1 clusters the data, level i > 1 clusters the centroids of level i-1 (L2 k-means, faiss). After the
  initial k-means of a level, ``n_resamples`` times: take from every cluster the ``sample_size`` points
  closest to its centroid (all of them if fewer), re-run k-means on that union (which over-represents
  small clusters relative to big ones, pulling centroids out of dense regions towards uniform coverage of
  the data's concepts) and re-assign every point of the level to the new centroids.
  Default ``sample_size``: the mean cluster size of the level, so large clusters are subsampled to it and
  small ones contribute all of their points.

Balanced sampling down the hierarchy: the target is split across the top-level clusters by water-filling
(every cluster gets the same cap c, the largest with sum(min(c, size)) <= target; clusters smaller than
c give all their points, so their unused share goes to the larger ones; the remaining < #clusters units
go one each to clusters larger than c, chosen by the seed). Each cluster's budget is split the same way
over its children, down to level-1 clusters, where points are picked at random or closest to the centroid.

``method="cap"``: one flat k-means (``levels[0]`` clusters) and the same water-filling cap.
"""
from __future__ import annotations

import numpy as np

METHODS = ("hierarchical", "cap")
STRATEGIES = ("random", "closest")


# Per-cluster sizes go into the stats (and so the manifest) up to this many clusters; beyond it the
# summary alone keeps the manifest small.
MAX_LISTED_CLUSTER_SIZES = 4096


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
        return {"n_clusters": int(k), "n_samples": 0, "gini": 0.0, "entropy": 0.0, "normalized_entropy": 1.0,
                "size_percentiles": {}, **listed}
    s = np.sort(sizes)
    gini = float((2.0 * np.sum(np.arange(1, k + 1) * s)) / (k * total) - (k + 1.0) / k)
    p = sizes[sizes > 0] / total
    ent = float(-np.sum(p * np.log(p)))
    pct = {f"p{q}": float(np.percentile(sizes, q)) for q in (0, 10, 25, 50, 75, 90, 99, 100)}
    pct["mean"] = float(sizes.mean())
    return {"n_clusters": int(k), "n_samples": int(total), "gini": max(gini, 0.0), "entropy": ent,
            "normalized_entropy": float(ent / np.log(k)) if k > 1 else 1.0, "size_percentiles": pct, **listed}


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
    return "kmeans++" if min(n, 256 * k) * k <= 4_000_000 else "random"


def _kmeans_resampled(x, k, n_resamples, sample_size, device, seed, niter):
    from mmcurate import index as mindex

    centroids, labels = mindex.kmeans(x, k, niter=niter, spherical=False, seed=seed, device=device,
                                      init=_init_for(x.shape[0], k))
    for t in range(n_resamples):
        _, dist = mindex.assign(x, centroids, metric="l2", device=device)
        r = sample_size if sample_size is not None else max(1, x.shape[0] // k)
        order = np.lexsort((dist, labels))  # by cluster, then closest to the centroid first
        starts = np.searchsorted(labels[order], np.arange(k))
        rank = np.arange(order.size) - np.repeat(starts, np.bincount(labels, minlength=k))
        sample = np.sort(order[rank < r])
        if sample.size < k:
            break
        centroids, _ = mindex.kmeans(x[sample], k, niter=niter, spherical=False, seed=seed + t + 1,
                                     device=device, init=_init_for(sample.size, k))
        labels, _ = mindex.assign(x, centroids, metric="l2", device=device)
    return centroids, labels


def hierarchical_kmeans(emb, levels=(1000, 100), n_resamples: int = 3, sample_size=None, device="auto",
                        seed: int = 0, niter: int = 20):
    """List of per-level ``(centroids, labels)``; level 0's labels index the data rows, level i's labels
    index level i-1's centroids. Each level's k is capped at the number of its input points."""
    from mmcurate.index.faiss_index import as_matrix

    x = as_matrix(emb, "emb")
    out = []
    for i, k in enumerate(levels):
        k = max(1, min(int(k), x.shape[0]))
        ss = sample_size[i] if isinstance(sample_size, (list, tuple)) else sample_size
        c, lab = _kmeans_resampled(x, k, int(n_resamples), ss, device, seed + 1000 * i, niter)
        out.append((c, lab))
        x = c
    return out


def _pick(members, count, dist, strategy, rng):
    if count >= members.size:
        return members
    if strategy == "random":
        return rng.choice(members, count, replace=False)
    return members[np.lexsort((members, dist[members]))[:count]]


def balanced_sample(emb, target: int, levels=(1000, 100), device: str = "auto", seed: int = 0,
                    method: str = "hierarchical", strategy: str = "random", n_resamples: int = 3,
                    sample_size=None, niter: int = 20, return_clusters: bool = False):
    """Sorted unique int64 indices of ``min(target, n)`` samples, balanced over semantic clusters
    (see the module docstring). ``strategy`` picks points within leaf clusters: "random" or "closest".
    With ``return_clusters`` also returns each sample's top-level cluster and the number of top-level
    clusters, ``(indices, top_labels int64[n], n_top)``, so callers need not cluster again for stats."""
    from mmcurate import index as mindex
    from mmcurate.index.faiss_index import as_matrix

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
    x = as_matrix(emb, "emb")
    n = x.shape[0]
    if not return_clusters:
        if target >= n:
            return np.arange(n, dtype=np.int64)
        if target == 0:
            return np.zeros(0, np.int64)
    dev = mindex.resolve_device(device)
    rng = np.random.default_rng(seed)
    if method == "cap":
        k = min(levels[0], n)
        centroids, labels = mindex.kmeans(x, k, niter=niter, spherical=False, seed=seed, device=dev,
                                          init=_init_for(n, k))
        hier = [(centroids, labels)]
    else:
        hier = hierarchical_kmeans(x, levels, n_resamples, sample_size, dev, seed, niter)

    # flat sizes: number of data points under each cluster of each level
    data_labels = [hier[0][1]]
    for _, lab in hier[1:]:
        data_labels.append(lab[data_labels[-1]])
    flat = [np.bincount(dl, minlength=c.shape[0]) for (c, _), dl in zip(hier, data_labels)]
    top_labels, n_top = data_labels[-1].astype(np.int64), int(hier[-1][0].shape[0])
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
            kids = order[bounds[p]:bounds[p + 1]]
            child_alloc[kids] = water_fill(flat[lvl][kids], alloc[p], rng)
        alloc = child_alloc

    leaf_c, leaf = hier[0]
    dist = mindex.assign(x, leaf_c, metric="l2", device=dev)[1] if strategy == "closest" else None
    order = np.argsort(leaf, kind="stable")
    bounds = np.searchsorted(leaf[order], np.arange(leaf_c.shape[0] + 1))
    picked = [_pick(order[bounds[c]:bounds[c + 1]], int(alloc[c]), dist, strategy, rng)
              for c in np.flatnonzero(alloc)]
    out = np.sort(np.concatenate(picked)).astype(np.int64)
    assert out.size == target, (out.size, target)  # water_fill allocations never exceed a cluster
    return (out, top_labels, n_top) if return_clusters else out
