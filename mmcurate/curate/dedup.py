"""Duplicate grouping over arrays: exact (by digest) and perceptual (by Hamming distance of 64-bit codes).

No pipeline knowledge: inputs are numpy arrays indexed 0..n-1, outputs are a :class:`Grouping` that says,
for every sample, which sample represents it. Which member of a group is kept is decided by a *rank*
(lower is preferred, all ranks distinct), built by :func:`preference_rank` from the sample keys and an
optional score, so the choice never depends on the order the samples arrived in.

Perceptual linkage:
  * ``"connected"``: samples within ``max_distance`` are linked and every connected component is one
    group. Chaining can put a member farther than ``max_distance`` from its representative (a~b, b~c,
    a and c far apart: one group). The reported distance is always to the representative.
  * ``"star"``: greedy in rank order: the best-ranked unassigned sample becomes a representative and takes
    every unassigned sample within ``max_distance`` of it. Every duplicate is within ``max_distance`` of
    its representative; a sample only linked to duplicates stays a representative itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINKAGES = ("connected", "star")


@dataclass
class Grouping:
    """Per sample i: ``representative[i]`` is the index of the kept sample of its group (i itself for
    representatives and singletons) and ``distance[i]`` its distance to it (0 for representatives)."""

    representative: np.ndarray  # int64[n]
    distance: np.ndarray        # int32[n]

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.representative != np.arange(len(self.representative))

    @property
    def n_duplicates(self) -> int:
        return int(np.count_nonzero(self.is_duplicate))

    @property
    def n_groups(self) -> int:
        """Groups with at least one duplicate."""
        return int(np.unique(self.representative[self.is_duplicate]).size)


def preference_rank(keys, scores=None, prefer: str = "max") -> np.ndarray:
    """Rank of each sample (0 = most preferred), distinct for distinct keys.

    Without scores: lexicographic key order (by code point, the same as UTF-8 byte order). With scores:
    the best score first (``prefer`` "max" or "min"), NaN scores last, key order breaking ties.
    """
    keys = np.asarray(keys, dtype=str)
    n = keys.size
    if scores is None:
        order = np.argsort(keys, kind="stable")
    else:
        if prefer not in ("max", "min"):
            raise ValueError(f"prefer must be 'max' or 'min', got {prefer!r}")
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (n,):
            raise ValueError(f"scores must have shape ({n},), got {s.shape}")
        primary = -s if prefer == "max" else s.copy()
        primary[np.isnan(primary)] = np.inf   # missing scores are the least preferred
        order = np.lexsort((keys, primary))    # last key is the primary sort key
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    return rank


def connected_components(n: int, pairs) -> np.ndarray:
    """Component label of each of n nodes given undirected edges ``pairs`` (int[m, 2]); the label is the
    smallest node index in the component. Uses scipy's csgraph when present, else a numpy hook-and-compress
    union-find (both give identical labels)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pairs.size == 0:
        return np.arange(n, dtype=np.int64)
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components as scipy_cc
    except ImportError:
        return _components_numpy(n, pairs)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = scipy_cc(graph, directed=False)
    # scipy numbers components in discovery order; map each to its smallest member for a stable label.
    smallest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n, dtype=np.int64))
    return smallest[labels]


def _components_numpy(n: int, pairs: np.ndarray) -> np.ndarray:
    """Vectorised union-find: hook the larger root under the smaller one for every edge whose ends are in
    different trees, then compress paths fully; repeat until no edge spans two trees. ``parent[x] <= x``
    always holds, so no cycles form, and each round at least halves the number of spanning trees."""
    parent = np.arange(n, dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        ri, rj = parent[i], parent[j]
        spanning = ri != rj
        if not spanning.any():
            return parent
        i, j, ri, rj = i[spanning], j[spanning], ri[spanning], rj[spanning]   # settled edges never return
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def exact_groups(digests, rank) -> Grouping:
    """Group equal digests (any hashable array: hex strings, bytes, integers); the best-ranked member of
    each group represents it."""
    digests = np.asarray(digests)
    rank = _check_rank(rank, digests.size)
    if digests.size == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros(0, np.int32))
    _, labels = np.unique(digests, return_inverse=True)
    return Grouping(_best_of_groups(labels.reshape(-1), rank), np.zeros(digests.size, dtype=np.int32))


def near_groups(codes, max_distance: int, rank, linkage: str = "connected", device: str = "auto",
                num_threads: int | None = None) -> Grouping:
    """Group 64-bit codes (uint64) within ``max_distance`` Hamming bits; see the module docstring for
    ``linkage``. ``distance[i]`` is the Hamming distance from i's code to its representative's."""
    from mmcurate.ops.hamming import as_codes, hamming_pairs

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    codes = as_codes(codes)
    n = codes.size
    rank = _check_rank(rank, n)
    if n == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros(0, np.int32))
    pairs, _dist = hamming_pairs(codes, max_distance, device=device, num_threads=num_threads)
    representative = link_groups(n, pairs, rank, linkage)
    distance = np.bitwise_count(codes ^ codes[representative]).astype(np.int32)
    return Grouping(representative, distance)


def chance_link_probability(radius: int, bits: int = 64) -> float:
    """P(popcount(a ^ b) <= radius) for two independent uniform codes of ``bits`` bits. Times n, the chance
    (unrelated) neighbours each sample has at that radius: what makes a fixed radius unsafe as n grows."""
    from math import comb

    return sum(comb(bits, k) for k in range(int(radius) + 1)) / 2.0 ** bits


def link_groups(n: int, pairs, rank, linkage: str = "connected") -> np.ndarray:
    """Representative of each of n samples given the linked pairs (int[m, 2]) and ranks, by ``linkage``.
    Samples in no pair represent themselves, and the result for the linked ones depends only on the pairs and
    on how their ranks order them, so it can be computed on the linked samples alone (renumbered, with ranks
    that order them the same way), as the sharded phash_dedup does."""
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rank = _check_rank(rank, n)
    if linkage == "connected":
        return _best_of_groups(connected_components(n, pairs), rank)
    return _star(n, pairs, rank)


def _check_rank(rank, n: int) -> np.ndarray:
    rank = np.asarray(rank, dtype=np.int64)
    if rank.shape != (n,):
        raise ValueError(f"rank must have shape ({n},), got {rank.shape}")
    return rank


def _best_of_groups(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For group labels (any ints), the index of each sample's best-ranked group member."""
    order = np.lexsort((rank, labels))            # by group, then by rank
    sorted_labels = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    starts = np.flatnonzero(first)
    group_of_sorted = np.cumsum(first) - 1
    representative = np.empty(len(order), dtype=np.int64)
    representative[order] = order[starts[group_of_sorted]]
    return representative


def _star(n: int, pairs: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Greedy star clustering in rank order over the linked samples only (singletons represent
    themselves). The loop is over representatives of linked samples, a small fraction of n in practice."""
    representative = np.arange(n, dtype=np.int64)
    if pairs.size == 0:
        return representative
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(n + 1))
    linked = np.unique(src)
    assigned = np.zeros(n, dtype=bool)
    for node in linked[np.argsort(rank[linked], kind="stable")]:
        if assigned[node]:
            continue
        assigned[node] = True
        neighbours = dst[start[node]:start[node + 1]]
        free = neighbours[~assigned[neighbours]]
        representative[free] = node
        assigned[free] = True
    return representative
