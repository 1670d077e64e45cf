"""Leakage-free, stratified train/val/test splits.

A *group* is a set of samples that must land in the same split (exact duplicates, pHash groups, semantic
duplicates, optionally whole semantic clusters); :func:`union_groups` merges several such labellings into
connected components. :func:`assign_splits` then assigns whole groups to splits:

* Each group has one stratum: the most frequent stratum among its members (ties: the smallest stratum id).
* Groups are taken largest first (equal sizes in a seeded shuffle). Each goes to the split (among those with
  a non-zero ratio) with the largest *deficit*: the remaining quota of its stratum
  (``ratio_k * N_s - assigned_sk``) plus the running global deficit (``ratio_k * (assigned + size) -
  assigned_k``). The stratum term keeps every split's share of each stratum close to the ratios; the
  global term stops many tiny strata (each too small to split) from all falling into the largest split.
  Ties go to the lower split index.
* Determinism: the result depends only on the group ids, their sizes and strata, the ratios and the seed.
  It does not depend on the order of the samples: permuting the input permutes the output.

Per-stratum share errors are bounded by roughly the largest group size in that stratum over its size;
with one giant group the ratios cannot be met and the group simply goes to the largest split.
"""

from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def union_groups(*group_arrays) -> np.ndarray:
    """Connected components of several labellings of the same n samples: two samples are linked when any
    labelling gives them the same label. Negative labels mean "no group" (no link). Returns int64[n]
    component ids numbered 0.. in order of each component's smallest member index."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not group_arrays:
        raise ValueError("union_groups needs at least one group array")
    arrs = [np.asarray(g) for g in group_arrays]
    n = arrs[0].shape[0]
    for g in arrs:
        if g.ndim != 1 or g.shape[0] != n:
            raise ValueError(f"all group arrays must be 1-D of the same length {n}, got shape {g.shape}")
    rows, cols = [], []
    for g in arrs:
        if np.issubdtype(g.dtype, np.number):
            members = np.flatnonzero(g >= 0)
        else:
            members = np.arange(n)
        if members.size == 0:
            continue
        _, first, inv = np.unique(g[members], return_index=True, return_inverse=True)
        rows.append(members)
        cols.append(members[first[inv]])  # link every member to its label's first member
    if n == 0:
        return np.zeros(0, np.int64)
    if rows:
        r, c = np.concatenate(rows), np.concatenate(cols)
    else:
        r = c = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # renumber by smallest member so the ids do not depend on scipy's traversal order
    _, first = np.unique(comp, return_index=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[comp]


def check_ratios(ratios) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or not 1 <= r.size <= 127:
        raise ValueError(f"ratios must be a 1-D sequence of 1..127 values, got {ratios!r}")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError(f"ratios must be finite and >= 0, got {ratios!r}")
    if abs(r.sum() - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {ratios!r} (sum {r.sum():.6g})")
    return r


def _group_strata(ginv: np.ndarray, n_groups: int, strata) -> np.ndarray:
    if strata is None:
        return np.zeros(n_groups, np.int64)
    s = np.asarray(strata)
    if s.ndim != 1 or s.shape[0] != ginv.shape[0]:
        raise ValueError(f"strata must be 1-D of length {ginv.shape[0]}, got shape {s.shape}")
    _, sinv = np.unique(s, return_inverse=True)
    n_s = int(sinv.max()) + 1
    pair, cnt = np.unique(ginv * n_s + sinv, return_counts=True)
    g, st = pair // n_s, pair % n_s
    o = np.lexsort((st, -cnt, g))  # per group: highest count first, then smallest stratum
    g, st = g[o], st[o]
    first = np.r_[True, g[1:] != g[:-1]]
    out = np.empty(n_groups, np.int64)
    out[g[first]] = st[first]
    return out


def assign_splits(groups, ratios=(0.8, 0.1, 0.1), strata=None, seed: int = 0) -> np.ndarray:
    """Split index per sample (int8[n]; 0 train, 1 val, 2 test for the default ratios). Samples with the
    same ``groups`` value always share a split; with ``strata`` every split gets about its ratio of every
    stratum. See the module docstring for the exact rule."""
    r = check_ratios(ratios)
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {g.shape}")
    n = g.shape[0]
    if n == 0:
        return np.zeros(0, np.int8)
    _, ginv, gsize = np.unique(g, return_inverse=True, return_counts=True)
    n_groups = gsize.size
    gstrat = _group_strata(ginv, n_groups, strata)
    n_strata = int(gstrat.max()) + 1
    stratum_total = np.bincount(gstrat, weights=gsize, minlength=n_strata)

    tie = np.random.default_rng(seed).permutation(n_groups)
    order = np.lexsort((tie, -gsize))
    active = [k for k in range(r.size) if r[k] > 0]
    ratio = [float(r[k]) for k in active]
    quota = [[ratio[j] * float(t) for j in range(len(active))] for t in stratum_total]  # remaining
    given = [0.0] * len(active)
    total = 0.0
    group_split = np.empty(n_groups, np.int8)
    sizes, strat = gsize.tolist(), gstrat.tolist()
    for gi in order.tolist():  # plain Python: K is tiny, numpy per-iteration overhead would dominate
        m, s = sizes[gi], strat[gi]
        q = quota[s]
        best_j, best_v = 0, -np.inf
        for j in range(len(active)):
            v = q[j] + ratio[j] * (total + m) - given[j]
            if v > best_v:
                best_j, best_v = j, v
        q[best_j] -= m
        given[best_j] += m
        total += m
        group_split[gi] = active[best_j]
    return group_split[ginv]
