"""Semantic deduplication (SemDeDup, Abbas et al. 2023, arXiv:2303.09540).

Definition (the same as the SemDeDup reference code, which thresholds ``max(triu(S), dim=0)``):

1. Spherical k-means on the L2-normalised embeddings (faiss; GPU when present) gives every sample a
   cluster and every cluster a unit centroid.
2. Within a cluster the members are put in a *keep order* (rank 0 = most worth keeping):
   * ``"hard"``  (SemDeDup's default): farthest from the centroid first, i.e. ascending cosine to the
     centroid. Near-duplicates close to the centroid ("easy", prototypical examples) are removed first.
   * ``"easy"``: closest to the centroid first.
   * ``"random"``: a permutation drawn from ``seed``.
   * a float array ``scores[n]``: highest score first (e.g. a CLIP score), NaN last.
   Ties are broken by the sample index, so the order is total.
3. ``max_similarity[j]`` is the largest cosine between j and any member ranked *before* j in its cluster
   (``-inf`` for the first member). j is a duplicate iff ``max_similarity[j] >= 1 - eps``. As in the
   reference, the earlier point need not itself be kept: a point is removed if anything more keepable is
   within eps of it (no greedy re-examination), so the rule has no order dependence beyond the ranking.
4. ``duplicate_of[j]`` (-1 for kept samples) is that most similar earlier-ranked member, the earliest in
   keep order among equal maxima. It is a witness (``cos(j, duplicate_of[j]) >= 1 - eps``) but may itself
   be a duplicate; :attr:`SemDedupResult.representative` follows the chain to the kept sample.

Because ``max_similarity`` does not depend on eps, ``result.keep_at(eps)`` re-thresholds for any other
eps without recomputation (the reference's eps sweep).

Clusters are independent and processed one at a time; within a cluster only the upper block-triangle of
the similarity matrix is computed, ``block x block`` at a time, so memory is bounded by the largest
cluster's rows plus one block, and the work is about half of the reference's full matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP_POLICIES = ("hard", "easy", "random")
NORM_TOL = 1e-3
DEFAULT_BLOCK = 4096


class ThresholdedSimilarity:
    """What SemDeDup results share: ``keep`` and ``max_similarity`` arrays thresholded at 1 - eps."""

    keep: np.ndarray
    max_similarity: np.ndarray

    @property
    def n_duplicates(self) -> int:
        return int(np.count_nonzero(~self.keep))

    def keep_at(self, eps: float) -> np.ndarray:
        """The keep mask for another eps on the same clusters and keep order."""
        check_eps(eps)
        return ~(self.max_similarity >= np.float32(1.0 - eps))


@dataclass
class SemDedupResult(ThresholdedSimilarity):
    keep: np.ndarray  # bool[n]
    duplicate_of: np.ndarray  # int64[n], -1 where kept
    cluster: np.ndarray  # int32[n]
    max_similarity: np.ndarray  # float32[n], -inf for the first member of each cluster's keep order
    centroids: np.ndarray  # float32[k, d], unit rows
    eps: float

    @property
    def representative(self) -> np.ndarray:
        """int64[n]: the kept sample each sample ends up at by following ``duplicate_of`` (itself if kept).
        Usable as a group labelling (e.g. for leakage-free splits)."""
        rep = np.where(self.keep, np.arange(self.keep.size), self.duplicate_of).astype(np.int64)
        # Each hop goes to a strictly earlier-ranked point, so pointer jumping ends in <= log2(n) rounds.
        while True:
            nxt = rep[rep]
            if np.array_equal(nxt, rep):
                return rep
            rep = nxt


def check_eps(eps: float) -> None:
    if not (0.0 < float(eps) < 1.0):
        raise ValueError(f"eps must be in (0, 1), got {eps}")


def _check_embeddings(emb) -> np.ndarray:
    a = np.asarray(emb) if not isinstance(emb, np.memmap) else emb
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"emb must be a non-empty 2-D array [n, d], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"emb must be float (float32 preferred), got {a.dtype}")
    for s in range(0, a.shape[0], 65536):  # chunked so a memmap is never loaded whole
        c = np.asarray(a[s : s + 65536], dtype=np.float32)
        if not np.isfinite(c).all():
            raise ValueError("emb contains NaN or infinite values")
        norms = np.linalg.norm(c, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOL)
        if bad.size:
            raise ValueError(
                f"emb rows must be L2-normalised (|norm - 1| <= {NORM_TOL}); row {s + bad[0]} "
                f"has norm {norms[bad[0]]:.6f}. Normalise with x / np.linalg.norm(x, axis=1, "
                "keepdims=True)"
            )
    return a


def keep_order(emb, cluster: np.ndarray, centroids: np.ndarray, keep="hard", seed: int = 0) -> np.ndarray:
    """All sample indices grouped by cluster (ascending cluster id), each cluster in keep order."""
    n = cluster.size
    idx = np.arange(n)
    if isinstance(keep, str):
        if keep not in KEEP_POLICIES:
            raise ValueError(f"keep must be one of {KEEP_POLICIES} or a float array of scores, got {keep!r}")
        if keep == "random":
            key = np.random.default_rng(seed).permutation(n).astype(np.float64)
        else:
            # cosine to own centroid in float64, row by row, so the order does not depend on BLAS blocking
            # (4096-row pieces: the float64 copies stay a few MB; the values do not depend on the piece size)
            cos = np.empty(n, np.float64)
            for s in range(0, n, 4096):
                e = np.asarray(emb[s : s + 4096], dtype=np.float64)
                cos[s : s + 4096] = np.einsum("ij,ij->i", e, centroids[cluster[s : s + 4096]].astype(np.float64))
            key = cos if keep == "hard" else -cos
    else:
        scores = np.asarray(keep, dtype=np.float64)
        if scores.shape != (n,):
            raise ValueError(f"keep scores must have shape ({n},), got {scores.shape}")
        key = np.where(np.isnan(scores), np.inf, -scores)  # highest first, NaN last
    return np.lexsort((idx, key, cluster))


def pair_cosine64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 dot product of each row of ``a`` with the same row of ``b`` (unit rows: the cosine), row by row,
    so a row's value does not depend on which other rows are in the call."""
    return np.einsum("ij,ij->i", np.asarray(a, np.float64), np.asarray(b, np.float64))


_MASK: list = [np.zeros((0, 0), np.float32)]


def _strict_lower_mask(size: int) -> np.ndarray:
    """float32 [size, size]: 0 where column < row, -inf elsewhere; added to a diagonal block it leaves each row
    only the rows ranked strictly earlier (one add beats boolean-index assignment ~3x). The top-left corner
    of a larger mask is the same pattern, so one mask, grown to the largest block, serves every size."""
    if _MASK[0].shape[0] < size:
        _MASK[0] = np.triu(np.full((size, size), -np.inf, np.float32))
    return _MASK[0][:size, :size]


def block_max_similarity(x: np.ndarray, block: int = DEFAULT_BLOCK):
    """For rows in keep order: (max cosine to any earlier row, argmax row) with -inf / -1 for row 0.
    Computes only the upper block-triangle of x @ x.T, ``block`` rows at a time; each block is laid out
    [later rows, earlier rows] so the max runs along contiguous memory."""
    m = x.shape[0]
    best = np.full(m, -np.inf, np.float32)
    arg = np.full(m, -1, np.int64)
    for cb in range(0, m, block):
        ce = min(cb + block, m)
        cols = x[cb:ce]
        span = np.arange(ce - cb)
        for rb in range(0, ce, block):
            re = min(rb + block, ce)
            s = cols @ x[rb:re].T  # [later, earlier]
            if re > cb:  # diagonal block (square): earlier means strictly before
                s += _strict_lower_mask(ce - cb)
            a = np.argmax(s, axis=1)  # first maximum -> earliest rank wins ties
            v = s[span, a]
            upd = v > best[cb:ce]  # strict: earlier row blocks win ties
            best[cb:ce][upd] = v[upd]
            arg[cb:ce][upd] = a[upd] + rb
    return best, arg


def block_max_similarity_torch(x, block: int = DEFAULT_BLOCK):
    """The same as :func:`block_max_similarity` on a torch tensor (CUDA or CPU); returns numpy arrays."""
    import torch

    m = x.shape[0]
    best = torch.full((m,), float("-inf"), dtype=torch.float32, device=x.device)
    arg = torch.full((m,), -1, dtype=torch.int64, device=x.device)
    for cb in range(0, m, block):
        ce = min(cb + block, m)
        cols = x[cb:ce]
        for rb in range(0, ce, block):
            re = min(rb + block, ce)
            s = x[rb:re] @ cols.T
            if re > cb:
                r = torch.arange(rb, re, device=x.device)[:, None]
                c = torch.arange(cb, ce, device=x.device)[None, :]
                s = s.masked_fill(r >= c, float("-inf"))
            # torch.max does not promise the first index among ties; take the smallest index at the max
            v = s.max(dim=0).values
            hit = s == v[None, :]
            rows = torch.arange(rb, re, device=x.device)[:, None].expand_as(s)
            a = torch.where(hit, rows, torch.full_like(rows, m)).min(dim=0).values
            upd = v > best[cb:ce]
            best[cb:ce] = torch.where(upd, v, best[cb:ce])
            arg[cb:ce] = torch.where(upd, a, arg[cb:ce])
    return best.cpu().numpy(), arg.cpu().numpy()


def torch_cuda_ok() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def semantic_dedup(
    emb,
    eps: float = 0.05,
    n_clusters: int = 100,
    keep="hard",
    device: str = "auto",
    seed: int = 0,
    niter: int = 20,
    block: int = DEFAULT_BLOCK,
    clusters: tuple[np.ndarray, np.ndarray] | None = None,
) -> SemDedupResult:
    """SemDeDup over ``emb`` (float[n, d], L2-normalised rows; an array or memmap). See the module doc.

    ``n_clusters`` is capped at n. ``device`` picks faiss's k-means device and, for the pairwise step,
    torch on CUDA when available (numpy/BLAS otherwise). ``clusters=(centroids, labels)`` skips k-means
    and uses a given clustering (centroids unit-normalised here).
    """
    check_eps(eps)
    a = _check_embeddings(emb)
    n = a.shape[0]
    from mmcurate import index as mindex  # deferred: faiss only when used

    dev = mindex.resolve_device(device)
    if clusters is None:
        k = max(1, min(int(n_clusters), n))
        centroids, labels = mindex.kmeans(a, k, niter=niter, spherical=True, seed=seed, device=dev)
    else:
        centroids, labels = clusters
        centroids = np.asarray(centroids, np.float32)
        labels = np.asarray(labels, np.int64)
        if labels.shape != (n,) or labels.min() < 0 or labels.max() >= centroids.shape[0]:
            raise ValueError("clusters=(centroids, labels): labels must be int[n] in [0, k)")
        centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    order = keep_order(a, labels, centroids, keep=keep, seed=seed)
    bounds = np.searchsorted(labels[order], np.arange(centroids.shape[0] + 1))

    use_torch = dev == "cuda" and torch_cuda_ok()
    best = np.full(n, -np.inf, np.float32)
    partner = np.full(n, -1, np.int64)
    for c in range(centroids.shape[0]):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size < 2:
            continue
        # gather in index order (sequential reads on a memmap), then permute into keep order
        srt = np.argsort(members, kind="stable")
        x = np.empty((members.size, a.shape[1]), np.float32)
        x[srt] = np.asarray(a[members[srt]], dtype=np.float32)
        if use_torch:
            import torch

            v, arg = block_max_similarity_torch(torch.from_numpy(x).cuda(), block)
        else:
            v, arg = block_max_similarity(x, block)
        best[members] = v
        partner[members] = np.where(arg >= 0, members[np.maximum(arg, 0)], -1)
    dup = best >= np.float32(1.0 - eps)
    return SemDedupResult(
        keep=~dup,
        duplicate_of=np.where(dup, partner, -1).astype(np.int64),
        cluster=labels.astype(np.int32),
        max_similarity=best,
        centroids=np.ascontiguousarray(centroids, np.float32),
        eps=float(eps),
    )
