"""Duplicate grouping over arrays: exact (by digest) and perceptual (by Hamming distance of 64- or 256-bit codes).

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
    distance: np.ndarray  # int32[n]
    n_pairs: int | None = None  # sample pairs within the radius, when near_groups was asked to count them
    # dihedral matching (verified_near_groups with variants): the transform (0..7, mmcurate.reference.TRANSFORMS'
    # order) mapping i onto its representative, 0 for representatives
    transform: np.ndarray | None = None

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
        primary[np.isnan(primary)] = np.inf  # missing scores are the least preferred
        order = np.lexsort((keys, primary))  # last key is the primary sort key
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
        i, j, ri, rj = i[spanning], j[spanning], ri[spanning], rj[spanning]  # settled edges never return
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


def near_groups(
    codes,
    max_distance: int,
    rank,
    linkage: str = "connected",
    device: str = "auto",
    num_threads: int | None = None,
    count_pairs: bool = False,
) -> Grouping:
    """Group 64- or 256-bit codes (as ``ops.hamming`` takes them: pHash ``uint64[n]``, PDQ ``uint64[n, 4]``)
    within ``max_distance`` Hamming bits; see the module docstring for ``linkage``. ``distance[i]`` is the
    Hamming distance from i's code to its representative's.

    Works on the distinct codes (:func:`code_graph`), so memory does not grow with the square of a group of
    copies or near-copies; the result is the same as linking every pair of samples within the radius.
    ``count_pairs`` also counts those pairs (``Grouping.n_pairs``) without listing them."""
    from mmcurate.ops.hamming import as_code_rows

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    codes = as_code_rows(codes)
    rank = _check_rank(rank, len(codes))
    if len(codes) == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros(0, np.int32), 0 if count_pairs else None)
    ucodes, inv, counts = distinct_codes(codes)
    graph = code_graph(ucodes, counts, max_distance, device=device, num_threads=num_threads)
    representative, n_pairs = _group_samples(graph, inv, rank, linkage, count_pairs)
    return Grouping(representative, _code_distance(codes, codes[representative]), n_pairs)


def near_components(
    codes, max_distance: int, device: str = "auto", num_threads: int | None = None
) -> tuple[np.ndarray, int]:
    """Connected components of the samples whose 64- or 256-bit codes lie within ``max_distance`` bits (labels:
    any int per component) and the number of linked sample pairs, computed on the distinct codes
    (:func:`code_graph`) without listing the pairs."""
    from mmcurate.ops.hamming import as_code_rows

    codes = as_code_rows(codes)
    if len(codes) == 0:
        return np.zeros(0, np.int64), 0
    ucodes, inv, counts = distinct_codes(codes)
    graph = code_graph(ucodes, counts, max_distance, device=device, num_threads=num_threads)
    links, n_pairs = spanning_links(graph)
    return connected_components(len(ucodes), links)[inv], n_pairs


def verified_near_groups(
    codes,
    verify,
    max_distance: int,
    verify_distance: int | None,
    rank,
    linkage: str = "star",
    device: str = "auto",
    num_threads: int | None = None,
    variants=None,
    verify_variants=None,
    accept=None,
) -> tuple[Grouping, np.ndarray]:
    """Group 64- or 256-bit ``codes`` (as ``ops.hamming`` takes them: PDQ as ``uint64[n, 4]``) within
    ``max_distance`` bits, a pair linked only when its ``verify`` codes (uint64[n], e.g. the exact pHash) also
    lie within ``verify_distance`` bits (None: no verification). ``linkage`` and ``rank`` as :func:`near_groups`.
    Returns the grouping (``distance``: code bits to the representative, ``n_pairs``: linked sample pairs) and
    each sample's verify distance to its representative.

    Works on the distinct (code, verify) tuples: samples sharing one are linked at distance 0 on both and
    have the same neighbours, so star and connected linkage over tuples ranked by their best member give the
    same groups as over samples.

    The tuples' graph is :func:`code_graph`'s with the verify code as a second segment: a dense cluster of distinct
    near-copies becomes an implicit ball (within half of both radii of its pivot, so every pair in it passes
    verification), and memory stays linear in the cluster's size. Dihedral matching and ``accept`` keep that bound
    (:class:`_LinkCheck`): pairs matched only under another transform are explicit edges (few, unless the image is
    near-symmetric under a transform), ``accept`` sees the explicit edges and each ball member against the ball's
    anchor member (refused members leave the ball, regrouped under anchors of their own). The result equals the
    pairwise definition wherever no ball forms and, in a ball, wherever ``accept`` agrees with every member exactly
    when it agrees with the anchor.

    Dihedral matching: ``variants`` (uint64[n, 8, W], each sample's codes of its 8 transformed pixel arrays in
    mmcurate.reference.TRANSFORMS' order, ``[:, 0]`` equal to ``codes``) and ``verify_variants`` (uint64[n, 8], the
    verify codes of the same transforms) link a pair when a transform of one lies within ``max_distance`` of the
    other (ops.hamming_range), verified under that transform; the grouping's ``distance`` and ``transform`` are then
    those of the closest of the 16 comparisons between a sample and its representative. ``accept(a, b, transform)``
    (sample indices, the transform mapping a onto b) may refuse verified pairs (bool mask): they are not linked; it
    sees each distinct tuple's best-ranked member for all of the tuple's samples."""
    from mmcurate.ops.hamming import as_code_rows

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    codes = as_code_rows(codes)
    rows = codes.reshape(len(codes), -1)
    verify = np.asarray(verify, np.uint64).reshape(-1)
    n = len(rows)
    if verify.size != n:
        raise ValueError(f"verify must have {n} codes, got {verify.size}")
    rank = _check_rank(rank, n)
    if n == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros(0, np.int32), 0), np.zeros(0, np.int32)
    dihedral = _dihedral_inputs(variants, verify_variants, rows, verify)
    extra = [] if dihedral is None else [dihedral[0].reshape(n, -1), dihedral[1]]
    tuples, inv, counts = distinct_codes(np.concatenate([rows, verify[:, None], *extra], axis=1))
    m, w = len(tuples), rows.shape[1]
    ucodes = tuples[:, 0] if w == 1 else np.ascontiguousarray(tuples[:, :w])
    tvariants = None if dihedral is None else tuples[:, w + 1 : w + 1 + 8 * w].reshape(m, 8, w)
    tverify_variants = None if dihedral is None else tuples[:, w + 1 + 8 * w :]
    check = None
    if dihedral is not None or accept is not None:
        order = np.lexsort((rank, inv))
        best_member = order[np.concatenate([[0], np.cumsum(counts)[:-1]])]
        check = _LinkCheck(tvariants, tverify_variants, verify_distance, accept, best_member)
    graph = code_graph(
        ucodes,
        counts,
        max_distance,
        device=device,
        num_threads=num_threads,
        verify=None if verify_distance is None else tuples[:, w],
        verify_distance=verify_distance,
        link_check=check,
    )
    if check is not None:
        graph.pairs = check.explicit_pairs(graph, max_distance, num_threads)
    representative, n_pairs = _group_samples(graph, inv, rank, linkage, True)
    if dihedral is not None:
        distance, transform, verify_d = dihedral_match(dihedral[0], dihedral[1], np.arange(n), representative)
        return Grouping(representative, distance, n_pairs, transform), verify_d
    distance = _code_distance(codes, codes[representative])
    verify_d = np.bitwise_count(verify ^ verify[representative]).astype(np.int32)
    return Grouping(representative, distance, n_pairs), verify_d


#: Pairs handed to verified_near_groups' ``accept`` per call.
ACCEPT_CHUNK = 8192
#: Explicit pairs matched under the dihedral transforms at a time (_LinkCheck.explicit_pairs).
PAIR_CHUNK = 1 << 18


class _LinkCheck:
    """What dihedral matching and ``accept`` add to verified_near_groups' graph of distinct tuples (code_graph over
    the identity code and the verify code), so that it stays linear in a cluster of distinct near-copies.

    The pairwise definition links distinct tuples i, j when the closest of the 16 comparisons (dihedral_match) is
    within the radius, the verify codes under that transform within verify_distance, and ``accept`` agrees. The
    graph's identity links are those pairs whose closest transform is the identity (or a tie with it); the rest is:

      * explicit pairs (codes outside balls): kept when verified under their closest transform and accepted;
      * dihedral-only pairs (a non-identity transform within the radius: ops.hamming_range with the 7 other
        variants as queries; few in a cluster of one asymmetric image) whose closest transform is not the identity
        and is verified, not already identity-linked: added as explicit edges (ends may be ball members), accepted;
      * balls (pairs not listed): each member is checked against the ball's anchor (its member nearest the pivot):
        a refused one (accept, or a closer non-identity transform that fails verification) leaves the ball, for
        a ball of its own with the refused members its new anchor accepts (code_graph's _reanchor) or, where too
        few agree, as an ordinary code with explicit edges; a ball candidate or a near ball links to the ball only
        if accepted against its anchor. So template variants are never swallowed by a ball; within a ball,
        agreement with the anchor stands for agreement between members (the approximation that keeps a ball
        O(members))."""

    def __init__(self, variants, verify_variants, verify_distance, accept, best_member):
        self.variants, self.verify_variants = variants, verify_variants
        self.verify_distance, self.accept, self.best_member = verify_distance, accept, best_member

    def _match(self, a: np.ndarray, b: np.ndarray):
        """(closest distance, transform a -> b, verify distance under it); transform 0 without variants."""
        if self.variants is None:
            return None, np.zeros(len(a), np.int64), None
        return dihedral_match(self.variants, self.verify_variants, a, b)

    def _ok(self, a: np.ndarray, b: np.ndarray, transform, vd) -> np.ndarray:
        ok = np.ones(len(a), bool)
        if vd is not None and self.verify_distance is not None:
            ok &= vd <= self.verify_distance
        if self.accept is not None and ok.any():
            bm = self.best_member
            on = np.flatnonzero(ok)
            for c in range(0, on.size, ACCEPT_CHUNK):  # the callback's memory per pair can be large (detail grids)
                s = on[c : c + ACCEPT_CHUNK]
                ok[s] = np.asarray(self.accept(bm[a[s]], bm[b[s]], transform[s]), dtype=bool)
        return ok

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether code pairs (a[i], b[i]) near each other by identity (a ball's member or candidate and its
        anchor) may be linked: a closer non-identity transform must verify, and accept must agree."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if a.size == 0:
            return np.ones(0, bool)
        _, transform, vd = self._match(a, b)
        if vd is not None:
            vd = np.where(transform == 0, 0, vd)  # identity-closest: verified by the graph already
        return self._ok(a, b, transform, vd)

    def explicit_pairs(self, g: CodeGraph, max_distance: int, num_threads) -> np.ndarray:
        """The graph's explicit pairs under the pairwise definition, with the dihedral-only pairs added. Checked
        PAIR_CHUNK pairs at a time: matching a pair under the 16 comparisons takes ~0.5 KB of temporaries, and a
        cluster of mutually refused template variants lists millions of pairs (5k of them: 11M, 2.7 GB at once)."""
        keep = [self._verified(g.pairs[s : s + PAIR_CHUNK]) for s in range(0, len(g.pairs), PAIR_CHUNK)]
        if self.variants is not None and len(g.codes) > 1:
            from mmcurate.ops.hamming import hamming_range

            m, w = self.variants.shape[0], self.variants.shape[2]
            queries = self.variants[:, 1:].reshape(m * 7, w)
            asked = np.flatnonzero(~symmetric_transforms(self.variants, max_distance)[:, 1:].reshape(-1))
            found, _ = hamming_range(
                np.ascontiguousarray(self.variants[:, 0]),
                np.ascontiguousarray(queries[asked]),
                max_distance,
                num_threads=num_threads,
            )
            found = np.asarray(found, np.int64).reshape(-1, 2)
            found = np.stack([asked[found[:, 0]] // 7, found[:, 1]], axis=1)
            found = found[found[:, 0] != found[:, 1]]
            found = np.unique(np.sort(found, axis=1), axis=0)
            if found.size:
                # identity-linked pairs are in the graph already (explicitly, or implicitly through a ball)
                found = found[~_within(g, g.codes[found[:, 0]], g.codes[found[:, 1]], g.radii)]
            for s in range(0, len(found), PAIR_CHUNK):
                # identity-closest pairs not identity-linked fail the pairwise definition too
                keep.append(self._verified(found[s : s + PAIR_CHUNK], identity_ok=False))
        return np.concatenate([np.zeros((0, 2), np.int64), *keep])

    def _verified(self, pairs: np.ndarray, identity_ok: bool = True) -> np.ndarray:
        """The pairs verified under their closest transform and accepted (with identity_ok False, only those whose
        closest transform is not the identity)."""
        _, transform, vd = self._match(pairs[:, 0], pairs[:, 1])
        if not identity_ok:
            other = transform != 0
            pairs, transform, vd = pairs[other], transform[other], None if vd is None else vd[other]
        return pairs[self._ok(pairs[:, 0], pairs[:, 1], transform, vd)]


#: The inverse of each dihedral transform (mmcurate.reference.TRANSFORMS' order): rot90 <-> rot270, the rest
#: undo themselves.
DIHEDRAL_INVERSE = np.array([0, 3, 2, 1, 4, 5, 6, 7], np.int64)


def _dihedral_inputs(variants, verify_variants, rows: np.ndarray, verify: np.ndarray):
    """(uint64[n, 8, W] codes, uint64[n, 8] verify codes) of dihedral matching, checked; None without variants."""
    if variants is None and verify_variants is None:
        return None
    if variants is None or verify_variants is None:
        raise ValueError("dihedral matching needs both variants and verify_variants")
    n, w = len(rows), rows.reshape(len(rows), -1).shape[1]
    v = np.ascontiguousarray(variants)
    v = v.view("<u8") if v.dtype == np.uint8 and v.shape[-1:] == (8 * w,) else v  # packed bytes, as ops.hamming
    v = v.view(np.uint64) if v.dtype == np.int64 else v
    vv = np.asarray(verify_variants, np.uint64)
    if v.dtype != np.uint64 or v.shape != (n, 8, w) or vv.shape != (n, 8):
        raise ValueError(f"variants must be [{n}, 8, {w}] codes and verify_variants [{n}, 8]")
    if not (np.array_equal(v[:, 0], rows.reshape(n, w)) and np.array_equal(vv[:, 0], verify)):
        raise ValueError("variants[:, 0] and verify_variants[:, 0] must be the codes and verify codes themselves")
    return v, vv


def symmetric_transforms(variants, max_distance: int) -> np.ndarray:
    """bool[n, 8]: which transforms of each sample (``variants`` uint64[n, 8, W]) lie within ``max_distance`` bits of
    its own identity code (column 0 always False). Such transforms are never searched for pairs of their own.

    An image (nearly) symmetric under a transform is, under it, (nearly) itself: its flipped copies already match it
    by identity, and the transform adds only pairs just beyond the radius. Searching pairs under it anyway lists
    every pair of a cluster of its copies (the transform lands inside the cluster): 4,000 re-encodings of a symmetric
    logo ran out of memory at 4 GB. verified_near_groups' transform search skips them; the sharded join gets them
    folded into the identity (fold_symmetric_transforms). Pairs found otherwise are still matched, verified and
    checked under their closest transform."""
    v = np.asarray(variants, np.uint64)
    near = np.bitwise_count(v ^ v[:, :1]).sum(axis=2) <= max_distance
    near[:, 0] = False
    return near


def fold_symmetric_transforms(variants, max_distance: int) -> np.ndarray:
    """A copy of dihedral codes (uint64[n, 8, W]) with each symmetric_transforms one replaced by the sample's identity
    code, for the sharded join (which writes no entries for a transform equal to the identity)."""
    v = np.array(variants, np.uint64, copy=True)
    near = symmetric_transforms(v, max_distance)
    v[near] = np.broadcast_to(v[:, :1], v.shape)[near]
    return v


def dihedral_match(variants, verify_variants, a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sample pairs (a[i], b[i]) (index arrays into ``variants`` uint64[n, 8, W] / ``verify_variants``
    uint64[n, 8]): the smallest code distance over the 16 comparisons (a's transform k against b's identity code,
    b's transform k against a's), the transform mapping a onto b that gave it (ties: a's side, then the lower k) and
    the verify distance under it. int32, int64, int32 arrays."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    fwd = np.bitwise_count(variants[a] ^ variants[b, 0][:, None, :]).sum(axis=2)  # T_k(a) vs b
    back = np.bitwise_count(variants[b] ^ variants[a, 0][:, None, :]).sum(axis=2)  # T_k(b) vs a
    d = np.concatenate([fwd, back], axis=1)
    best = d.argmin(axis=1)
    k = best % 8
    forward = best < 8
    idx = np.arange(len(a))
    vd = np.where(
        forward,
        np.bitwise_count(verify_variants[a, k] ^ verify_variants[b, 0]),
        np.bitwise_count(verify_variants[b, k] ^ verify_variants[a, 0]),
    )
    return d[idx, best].astype(np.int32), np.where(forward, k, DIHEDRAL_INVERSE[k]), vd.astype(np.int32)


def distinct_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct codes, each sample's index into them, samples per distinct code) of ``uint64[n]`` codes or
    ``uint64[n, W]`` rows."""
    if codes.ndim == 1:
        u, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
    else:
        u, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return u, inv.reshape(-1), counts


def _code_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance (int32) of code arrays of one layout, per code."""
    d = np.bitwise_count(a ^ b)
    return (d if d.ndim == 1 else d.sum(axis=1)).astype(np.int32)


def _group_samples(graph: CodeGraph, inv: np.ndarray, rank: np.ndarray, linkage: str, count_pairs: bool):
    """(each sample's representative, the linked sample pairs or None) from the graph of its distinct codes
    (``inv``: each sample's code). Star over samples == star over distinct codes ranked by their best member:
    that member is reached first, so it is a centre exactly when its code is, and then takes every copy at
    distance 0."""
    links, n_pairs = spanning_links(graph) if (count_pairs or linkage == "connected") else (None, None)
    if linkage == "connected":
        return _best_of_groups(connected_components(len(graph.codes), links)[inv], rank), n_pairs
    order = np.lexsort((rank, inv))
    best_member = order[np.concatenate([[0], np.cumsum(graph.counts)[:-1]])]
    return best_member[_star_codes(graph, rank[best_member])][inv], n_pairs


# ---------------------------------------------------------------------------------------------------------
# the radius graph over distinct codes, with dense near-copy clusters kept implicit

#: Pairs of distinct codes (16 bytes each) the plain join may return before dense clusters are looked for.
DENSE_PAIR_BUDGET = 1 << 22
#: Distinct codes sampled to estimate the join's pairs and to find dense clusters, per round.
DENSE_SAMPLE = 2048
#: A sampled code with this many sampled neighbours is taken as a ball pivot.
DENSE_MIN_DEGREE = 4
DENSE_MAX_PIVOTS = 64
DENSE_ROUNDS = 4
#: Anchors tried, per ball, for balls of the members its anchor refused (code_graph's _reanchor), and how many in
#: a row may take too few members (fewer than DENSE_MIN_DEGREE codes) before the rest stay ordinary codes. Each
#: check a round makes is a pair the pairwise join would check too, and never checked twice, so rounds cost at most
#: what the join would: the bound only stops a loop, a mockup's prints may be thousands.
REANCHOR_ROUNDS = 1 << 16
REANCHOR_MISSES = 8
_CROSS_TILE = 1 << 22  # code words compared per tile when two balls are compared


@dataclass
class CodeGraph:
    """The link graph over distinct codes (``counts`` samples each). A code is a row of words cut into
    *segments* (the searched code, e.g. 1 word for pHash or 4 for PDQ, then optionally a verify code); two
    codes are linked when every segment lies within its radius (``radii``).

    Codes in a *ball* (every segment within half its radius of the ball's pivot, so pairwise linked: a clique)
    are never joined pairwise; every other linked pair of codes is in ``pairs``. A code outside the balls can
    only be linked to a ball's member if each segment is within ``r + r // 2`` of the pivot (``ball_cands``
    rows (ball, code)), two balls only if their pivots are within ``r + 2 * (r // 2)`` (``ball_near`` rows
    (ball i, ball j), i < j), by the triangle inequality per segment. Balls exist only where the sampled join
    found dense clusters of near-copies (re-encodings of one image): memory is then O(distinct codes + pairs
    among the codes outside balls), not the square of a cluster's size. One implementation for every code
    width: only ``segments`` differ."""

    codes: np.ndarray  # uint64[m, W], the segments' words side by side
    counts: np.ndarray  # int64[m]
    segments: tuple  # ((first word, end word), ...): the searched code first
    radii: tuple  # one radius per segment
    pairs: np.ndarray  # int64[p, 2], i < j, codes outside balls
    ball: np.ndarray  # int64[m], -1 outside every ball
    pivots: np.ndarray  # uint64[b, W]
    ball_cands: np.ndarray  # int64[c, 2]
    ball_near: np.ndarray  # int64[d, 2]

    @property
    def radius(self) -> int:
        """The searched code's radius."""
        return self.radii[0]


def code_graph(
    ucodes,
    counts,
    max_distance: int,
    device: str = "auto",
    num_threads: int | None = None,
    seed: int = 0,
    verify=None,
    verify_distance: int | None = None,
    link_check=None,
) -> CodeGraph:
    """The :class:`CodeGraph` of distinct 64- or 256-bit codes (as ``ops.hamming`` takes them), linked within
    ``max_distance`` bits and, with ``verify`` (uint64[m], a second code per distinct code), only where the
    verify codes also lie within ``verify_distance`` bits. ``seed`` only steers the sampling that looks for
    dense clusters: the graph it describes (and every grouping from it) does not depend on it.

    ``link_check(a, b)`` (code index arrays -> bool mask) may refuse links the radii allow; it is asked about each
    ball member, ball candidate and near ball against the ball's *anchor* (its member nearest the pivot; for near
    balls, anchor against anchor): refused members leave the ball (regrouped into balls under anchors of their own
    where enough of them agree with one, :func:`_reanchor`; the rest ordinary codes, joined pairwise), refused
    candidates and near balls are not linked to the ball. The explicit ``pairs`` are not checked (the caller
    filters them). With a check, the graph can depend on ``seed`` where the check is not consistent across a
    ball (agreement with the anchor stands for agreement between its members)."""
    from mmcurate.ops._inputs import check_int
    from mmcurate.ops.hamming import as_code_rows

    ucodes = as_code_rows(ucodes)
    words = 1 if ucodes.ndim == 1 else ucodes.shape[1]
    m = len(ucodes)
    rows, segments = ucodes.reshape(m, words), [(0, words)]
    radii = [check_int(max_distance, "max_distance", 0, 64 if words == 1 else 255)]
    if verify is not None:
        if verify_distance is None:
            raise ValueError("verify needs a verify_distance")
        verify = np.asarray(verify, np.uint64).reshape(-1)
        if verify.size != m:
            raise ValueError(f"verify must have {m} codes, got {verify.size}")
        rows = np.concatenate([rows, verify[:, None]], axis=1)
        segments.append((words, words + 1))
        radii.append(check_int(verify_distance, "verify_distance", 0, 64))
    g = CodeGraph(
        rows,
        np.asarray(counts, np.int64),
        tuple(segments),
        tuple(radii),
        np.zeros((0, 2), np.int64),
        np.full(m, -1, np.int64),
        np.zeros((0, rows.shape[1]), np.uint64),
        np.zeros((0, 2), np.int64),
        np.zeros((0, 2), np.int64),
    )
    g.pivots = _find_balls(g, np.random.default_rng(seed))
    anchors = np.zeros(0, np.int64)
    if link_check is not None and len(g.pivots):
        anchors = _ball_anchors(g)
        inside = np.flatnonzero(g.ball >= 0)
        refused = inside[~np.asarray(link_check(inside, anchors[g.ball[inside]]), bool)]
        refused = refused[refused != anchors[g.ball[refused]]]
        g.pivots, anchors = _reanchor(g, refused, anchors, link_check)
    rest = np.flatnonzero(g.ball < 0)
    if rest.size > 1:
        g.pairs = rest[_linked_pairs(g, rows[rest], device=device, num_threads=num_threads)]
    if len(g.pivots):
        half = [r // 2 for r in radii]
        # balls regrouped from one ball share its pivot: candidates and nearness per distinct pivot, then per ball
        upiv, of_pivot = np.unique(g.pivots, axis=0, return_inverse=True)
        of_pivot = of_pivot.reshape(-1)
        balls_of = [np.flatnonzero(of_pivot == u) for u in range(len(upiv))]
        rows_c = [np.zeros((0, 2), np.int64)]
        for u, p in enumerate(upiv):
            close = rest[_within(g, rows[rest], p, [r + t for r, t in zip(radii, half)])]
            rows_c += [np.stack([np.full(close.size, b), close], axis=1) for b in balls_of[u]]
        g.ball_cands = np.concatenate(rows_c).astype(np.int64, copy=False)
        near = _within(g, upiv[:, None], upiv[None, :], [r + 2 * t for r, t in zip(radii, half)])
        # balls of one pivot are not near pairs: each of their anchors was refused by the ones before it already
        pu, pv = np.nonzero(np.triu(near, 1))
        rows_n = [np.zeros((0, 2), np.int64)]
        for u, v in zip(pu.tolist(), pv.tolist()):
            i, j = (x.ravel() for x in np.meshgrid(balls_of[u], balls_of[v], indexing="ij"))
            rows_n.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
        g.ball_near = np.unique(np.concatenate(rows_n).astype(np.int64, copy=False), axis=0)
        if link_check is not None:
            cands, nb = g.ball_cands, g.ball_near
            g.ball_cands = cands[np.asarray(link_check(cands[:, 1], anchors[cands[:, 0]]), dtype=bool)]
            g.ball_near = nb[np.asarray(link_check(anchors[nb[:, 0]], anchors[nb[:, 1]]), dtype=bool)]
    return g


def _reanchor(g: CodeGraph, refused: np.ndarray, anchors: np.ndarray, link_check) -> tuple[np.ndarray, np.ndarray]:
    """Members a ball's anchor refused (template variants of it), regrouped into balls of their own: the refused
    member nearest the pivot anchors a new ball (same pivot, so still a clique by the radii) of the refused members
    it accepts, when they are at least DENSE_MIN_DEGREE codes (a rarer variant and its copies stay ordinary codes);
    repeated until REANCHOR_MISSES anchors in a row take too few (or REANCHOR_ROUNDS anchors). What no new anchor
    takes leaves the balls (``g.ball`` -1: ordinary codes, joined pairwise: variants that share nothing stay
    quadratic). Without this, a cluster of many copies of a few template variants (one mockup, 50 prints, 100 copies
    each) was joined pairwise: its pairs, and the checks, grew with the square of the cluster; now the checks grow
    with members x variants. Each new anchor was refused by the anchors before it, so balls of one pivot are never
    linked to one another. Returns the pivots and anchors, one per ball, the new balls appended."""
    former = g.ball[refused]
    g.ball[refused] = -1
    pivots, anchor_of = list(g.pivots), list(anchors)
    order = np.argsort(former, kind="stable")
    bounds = np.searchsorted(former[order], np.arange(len(g.pivots) + 1))
    for b in range(len(g.pivots)):
        left = refused[order[bounds[b] : bounds[b + 1]]]
        misses = 0
        for _ in range(REANCHOR_ROUNDS):
            if left.size < DENSE_MIN_DEGREE or misses == REANCHOR_MISSES:
                break
            d = np.bitwise_count(g.codes[left] ^ g.pivots[b]).sum(axis=1)
            k = int(np.argmin(d))
            anchor, rest = left[k], np.delete(left, k)
            ok = np.asarray(link_check(rest, np.full(rest.size, anchor)), bool)
            left = rest[~ok]
            if ok.sum() + 1 < DENSE_MIN_DEGREE:  # a rare variant: it and its copies stay ordinary codes
                misses += 1
                continue
            misses = 0
            g.ball[anchor] = g.ball[rest[ok]] = len(pivots)
            pivots.append(g.pivots[b])
            anchor_of.append(anchor)
    return np.asarray(pivots, np.uint64).reshape(-1, g.codes.shape[1]), np.asarray(anchor_of, np.int64)


def _ball_anchors(g: CodeGraph) -> np.ndarray:
    """Each ball's member nearest its pivot (summed over the segments; ties: the lowest index)."""
    out = np.zeros(len(g.pivots), np.int64)
    for b, mem in enumerate(_ball_members(g)):
        d = np.bitwise_count(g.codes[mem] ^ g.pivots[b]).sum(axis=1)
        out[b] = mem[np.argmin(d)]
    return out


def _within(g: CodeGraph, a: np.ndarray, b: np.ndarray, radii) -> np.ndarray:
    """For code rows ``a`` and ``b`` (``[..., W]``, broadcast against each other): True where every segment of
    ``a ^ b`` has at most its radius bits set. Word by word: popcounts summed over a short last axis are ~6x
    slower in numpy."""
    ok: np.ndarray | bool = True
    for (lo, hi), r in zip(g.segments, radii):
        d = np.bitwise_count(a[..., lo] ^ b[..., lo])
        if hi - lo > 1:
            d = d.astype(np.uint16)  # up to 256 bits
            for w in range(lo + 1, hi):
                d += np.bitwise_count(a[..., w] ^ b[..., w])
        ok = ok & (d <= r)
    return np.asarray(ok)


def _linked_pairs(g: CodeGraph, rows: np.ndarray, device: str = "cpu", num_threads: int | None = None) -> np.ndarray:
    """Linked pairs (int64[p, 2], i < j) among ``rows``: the searched code's radius join (ops.hamming_pairs),
    filtered by the other segments."""
    from mmcurate.ops.hamming import hamming_pairs

    a, b = g.segments[0]
    found, _ = hamming_pairs(np.ascontiguousarray(rows[:, a:b]), g.radii[0], device=device, num_threads=num_threads)
    pairs = np.asarray(found, np.int64).reshape(-1, 2)
    if len(g.segments) > 1 and pairs.size:  # in chunks: both ends' rows of millions of pairs take gigabytes
        keep = np.zeros(len(pairs), bool)
        for s in range(0, len(pairs), PAIR_CHUNK):
            part = pairs[s : s + PAIR_CHUNK]
            keep[s : s + PAIR_CHUNK] = _within(g, rows[part[:, 0]], rows[part[:, 1]], g.radii)
        pairs = pairs[keep]
    return pairs


def _find_balls(g: CodeGraph, rng) -> np.ndarray:
    """Estimate the plain join's pairs from a sample of the codes not yet in a ball (pairs scale with the
    square of the sampled fraction); while over DENSE_PAIR_BUDGET, take the best-connected sampled codes as
    pivots (none within half the radii of another) and put every free code within half the radii of one into
    its first one's ball. Fills ``g.ball`` in place, returns the pivots."""
    half = [r // 2 for r in g.radii]
    pivots: list = []
    if min(half) == 0:
        return np.zeros((0, g.codes.shape[1]), np.uint64)  # balls of radius 0 are single codes: nothing to gain
    for _ in range(DENSE_ROUNDS):
        free = np.flatnonzero(g.ball < 0)
        if free.size <= DENSE_SAMPLE:
            break
        sample = np.sort(rng.choice(free, DENSE_SAMPLE, replace=False))
        adj = _adjacency(g, g.codes[sample])
        if adj.sum() // 2 * (free.size / DENSE_SAMPLE) ** 2 <= DENSE_PAIR_BUDGET:
            break
        degree = adj.sum(axis=1)
        new: list = []
        covered = np.zeros(DENSE_SAMPLE, bool)  # sampled codes inside a pivot's ball: not worth a pivot of their own
        for k in np.argsort(-degree, kind="stable"):
            if degree[k] < DENSE_MIN_DEGREE or len(new) == DENSE_MAX_PIVOTS:
                break
            if covered[k]:
                continue
            # the pivot is the bitwise majority of the code and its sampled neighbours: near the cluster's
            # centre, so its ball takes most of the cluster (a pivot need not be a code of the input)
            c = _majority(g.codes[sample[adj[k] | (np.arange(DENSE_SAMPLE) == k)]])
            taken = np.asarray(pivots + new, np.uint64).reshape(-1, g.codes.shape[1])
            if len(taken) and _within(g, taken, c, half).any():
                continue
            new.append(c)
            covered |= _within(g, g.codes[sample], c, half)
        if not new:
            break
        for c in new:
            free = np.flatnonzero(g.ball < 0)
            g.ball[free[_within(g, g.codes[free], c, half)]] = len(pivots)
            pivots.append(c)
    return np.asarray(pivots, np.uint64).reshape(-1, g.codes.shape[1])


def _adjacency(g: CodeGraph, rows: np.ndarray) -> np.ndarray:
    """bool[k, k]: which of ``rows`` are linked (the diagonal False), compared all against all in tiles. For the
    sample that looks for dense clusters: it is small, and where it holds a dense cluster a radius join would
    list millions of pairs (multi-index hashing finding each in many tables) only to count them."""
    k = len(rows)
    adj = np.zeros((k, k), bool)
    step = max(1, _CROSS_TILE // max(1, k * rows.shape[1]))
    for s in range(0, k, step):
        adj[s : s + step] = _within(g, rows[s : s + step, None], rows[None, :], g.radii)
    np.fill_diagonal(adj, False)
    return adj


def _majority(rows: np.ndarray) -> np.ndarray:
    """The code row (uint64[W]) whose every bit is the majority bit of ``rows`` (uint64[k, W]; ties: 0)."""
    k, w = rows.shape
    bits = np.unpackbits(rows.astype("<u8").view(np.uint8).reshape(k, 8 * w), axis=1, bitorder="little")
    return np.packbits(bits.sum(axis=0) * 2 > k, bitorder="little").view("<u8").astype(np.uint64)


def _ball_members(g: CodeGraph) -> list:
    order = np.argsort(g.ball, kind="stable")
    bounds = np.searchsorted(g.ball[order], np.arange(len(g.pivots) + 1))
    return [order[bounds[b] : bounds[b + 1]] for b in range(len(g.pivots))]


def _cross(g: CodeGraph, a: np.ndarray, b: np.ndarray):
    """Sample pairs linked between code sets a and b (weighted by counts) and links (int64[k, 2]: each code
    of a linked to some code of b, to the first such), tile by tile so memory stays bounded."""
    ca, cb, wb = g.codes[a], g.codes[b], g.counts[b]
    step = max(1, _CROSS_TILE // max(1, b.size * g.codes.shape[1]))
    total, links = 0, [np.zeros((0, 2), np.int64)]
    for s in range(0, a.size, step):
        within = _within(g, ca[s : s + step, None], cb[None, :], g.radii)
        rows = np.flatnonzero(within.any(axis=1))
        if rows.size:
            links.append(np.stack([a[s + rows], b[np.argmax(within[rows], axis=1)]], axis=1))
            total += int(within.astype(np.int64) @ wb @ g.counts[a[s : s + step]])
    return total, np.concatenate(links)


def spanning_links(g: CodeGraph) -> tuple[np.ndarray, int]:
    """Links over code indices whose connected components are the graph's (the explicit pairs, each ball's
    members to its first, one link per linked (ball, code) and (ball, ball)), and the number of linked sample
    pairs (copies of one code included): a ball's pairs in closed form, since all are linked."""
    c = g.counts
    n_pairs = int((c * (c - 1) // 2).sum())
    if g.pairs.size:
        n_pairs += int((c[g.pairs[:, 0]] * c[g.pairs[:, 1]]).sum())
    links = [g.pairs]
    members = _ball_members(g)
    for mem in members:
        links.append(np.stack([mem[1:], np.full(mem.size - 1, mem[0])], axis=1))
        w = c[mem]
        n_pairs += int((w.sum() ** 2 - (w * w).sum()) // 2)
    cands = g.ball_cands[np.argsort(g.ball_cands[:, 0], kind="stable")]
    bounds = np.searchsorted(cands[:, 0], np.arange(len(g.pivots) + 1))
    for b in range(len(g.pivots)):
        total, found = _cross(g, cands[bounds[b] : bounds[b + 1], 1], members[b])
        n_pairs += total
        links.append(found)
    for i, j in g.ball_near.tolist():
        a, b = (members[i], members[j]) if members[i].size <= members[j].size else (members[j], members[i])
        total, found = _cross(g, a, b)
        n_pairs += total
        links.append(found[:1])  # one link joins two balls (each is one component already)
    return np.concatenate(links).astype(np.int64, copy=False), n_pairs


def code_components(g: CodeGraph) -> np.ndarray:
    """Connected component label of each distinct code."""
    return connected_components(len(g.codes), spanning_links(g)[0])


def _segment_ints(g: CodeGraph) -> list[list[int]]:
    """Each segment of every code as one Python int (any width), for the star loop's single comparisons."""
    out = []
    for a, b in g.segments:
        seg = np.ascontiguousarray(g.codes[:, a:b]).astype("<u8")
        if b - a == 1:
            out.append(seg.reshape(-1).tolist())
        else:
            out.append([int.from_bytes(v, "little") for v in seg.view(f"V{8 * (b - a)}").reshape(-1).tolist()])
    return out


def _star_codes(g: CodeGraph, crank: np.ndarray) -> np.ndarray:
    """Greedy star clustering of the distinct codes in ``crank`` order (see the module docstring): each code's
    representative code. Explicit pairs are handled as in _star (a centre claims its free neighbours). Codes
    in or near a ball instead look, when reached, for the best centre among those that can be linked to it:
    its ball's centre (a ball has at most one: it is linked to all its members), the centres near its ball,
    or the centres of the balls it is a candidate of; whichever ranks first wins."""
    m = len(g.codes)
    representative = np.arange(m, dtype=np.int64)
    involved = g.ball >= 0
    involved[g.ball_cands[:, 1]] = True
    linked = involved.copy()
    linked[g.pairs.ravel()] = True
    if not linked.any():
        return representative
    src = np.concatenate([g.pairs[:, 0], g.pairs[:, 1]])
    dst = np.concatenate([g.pairs[:, 1], g.pairs[:, 0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(m + 1))
    n_balls = len(g.pivots)
    cand_balls: dict = {}
    for b, s in g.ball_cands.tolist():
        cand_balls.setdefault(s, []).append(b)
    near: list[list[int]] = [[] for _ in range(n_balls)]
    for i, j in g.ball_near.tolist():
        near[i].append(j)
        near[j].append(i)
    ball_centre = [-1] * n_balls
    cand_centres: list[list[int]] = [[] for _ in range(n_balls)]
    ball, cr, inv_l = g.ball.tolist(), crank.tolist(), involved.tolist()
    segs = list(zip(_segment_ints(g), g.radii))

    def is_linked(u: int, c: int) -> bool:
        return all((v[u] ^ v[c]).bit_count() <= r for v, r in segs)

    assigned = np.zeros(m, dtype=bool)
    nodes = np.flatnonzero(linked)
    for u in nodes[np.argsort(crank[nodes], kind="stable")].tolist():
        if inv_l[u]:
            best = int(representative[u]) if assigned[u] else -1
            b = ball[u]
            if b >= 0:
                found = [ball_centre[b]] + [c for c in cand_centres[b] if is_linked(u, c)]
                found += [ball_centre[o] for o in near[b] if ball_centre[o] >= 0 and is_linked(u, ball_centre[o])]
            else:
                found = [
                    ball_centre[o]
                    for o in cand_balls.get(u, ())
                    if ball_centre[o] >= 0 and is_linked(u, ball_centre[o])
                ]
            for c in found:
                if c >= 0 and (best < 0 or cr[c] < cr[best]):
                    best = c
            if best >= 0:
                representative[u] = best
                assigned[u] = True
                continue
        elif assigned[u]:
            continue
        assigned[u] = True  # u is a centre
        neighbours = dst[start[u] : start[u + 1]]
        free = neighbours[~assigned[neighbours]]
        representative[free] = u
        assigned[free] = True
        if inv_l[u]:
            if ball[u] >= 0:
                ball_centre[ball[u]] = u
            else:
                for o in cand_balls.get(u, ()):
                    cand_centres[o].append(u)
    return representative


def chance_link_probability(radius: int, bits: int = 64) -> float:
    """P(popcount(a ^ b) <= radius) for two independent uniform codes of ``bits`` bits. Times n, the chance
    (unrelated) neighbours each sample has at that radius: what makes a fixed radius unsafe as n grows."""
    from math import comb

    return sum(comb(bits, k) for k in range(int(radius) + 1)) / 2.0**bits


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
    order = np.lexsort((rank, labels))  # by group, then by rank
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
        neighbours = dst[start[node] : start[node + 1]]
        free = neighbours[~assigned[neighbours]]
        representative[free] = node
        assigned[free] = True
    return representative
