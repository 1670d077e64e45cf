"""Dedup grouping (mmcurate.curate.dedup) against brute-force definitions over dense distance matrices."""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.curate import dedup


def planted_codes(n: int, rng, families: int = 30, max_flips: int = 12) -> np.ndarray:
    """Random codes where many are variants (a few bits flipped) of a few family heads, so every radius
    forms non-trivial groups and chains."""
    codes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    heads = codes[:families]
    for i in range(families, n):
        if rng.random() < 0.6:
            flips = rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False)
            mask = np.bitwise_or.reduce((np.uint64(1) << flips.astype(np.uint64)), initial=np.uint64(0))
            codes[i] = heads[rng.integers(0, families)] ^ mask
    return codes


def dense_distances(codes: np.ndarray) -> np.ndarray:
    return np.bitwise_count(codes[:, None] ^ codes[None, :]).astype(np.int32)


def reference_components(adjacency: np.ndarray) -> np.ndarray:
    """Label = smallest node of the component, by breadth-first search."""
    n = len(adjacency)
    labels = np.full(n, -1)
    for start in range(n):
        if labels[start] >= 0:
            continue
        frontier = [start]
        labels[start] = start
        while frontier:
            node = frontier.pop()
            for nb in np.flatnonzero(adjacency[node]):
                if labels[nb] < 0:
                    labels[nb] = start
                    frontier.append(nb)
    return labels


def reference_connected(codes, r, rank):
    d = dense_distances(codes)
    labels = reference_components(d <= r)
    rep = np.array([min(np.flatnonzero(labels == labels[i]), key=lambda j: rank[j]) for i in range(len(codes))])
    return rep, d[np.arange(len(codes)), rep]


def reference_star(codes, r, rank):
    d = dense_distances(codes)
    n = len(codes)
    rep = np.full(n, -1)
    for node in np.argsort(rank):
        if rep[node] >= 0:
            continue
        rep[node] = node
        for other in range(n):
            if rep[other] < 0 and d[node, other] <= r:
                rep[other] = node
    return rep, d[np.arange(n), rep]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("r", [0, 4, 10])
def test_near_groups_equal_brute_force(seed, r):
    rng = np.random.default_rng(seed)
    codes = planted_codes(240, rng)
    rank = rng.permutation(len(codes))
    for linkage, reference in (("connected", reference_connected), ("star", reference_star)):
        got = dedup.near_groups(codes, r, rank, linkage=linkage, device="cpu")
        rep, dist = reference(codes, r, rank)
        np.testing.assert_array_equal(got.representative, rep, err_msg=linkage)
        np.testing.assert_array_equal(got.distance, dist, err_msg=linkage)


def test_star_never_links_beyond_radius_connected_can():
    rng = np.random.default_rng(3)
    codes = planted_codes(400, rng, families=10)
    rank = np.arange(len(codes))
    star = dedup.near_groups(codes, 8, rank, linkage="star", device="cpu")
    assert star.distance.max() <= 8
    connected = dedup.near_groups(codes, 8, rank, linkage="connected", device="cpu")
    assert connected.distance.max() > 8  # chaining through intermediate variants
    assert connected.n_duplicates >= star.n_duplicates


def test_chain_connected_vs_star():
    a = np.uint64(0)
    b = np.uint64((1 << 6) - 1)  # 6 bits from a
    c = np.uint64((1 << 12) - 1)  # 6 bits from b, 12 from a
    codes = np.array([a, b, c], dtype=np.uint64)
    rank = np.arange(3)
    connected = dedup.near_groups(codes, 6, rank, linkage="connected", device="cpu")
    assert connected.representative.tolist() == [0, 0, 0]
    assert connected.distance.tolist() == [0, 6, 12]  # c is reported with its distance to a, beyond r
    star = dedup.near_groups(codes, 6, rank, linkage="star", device="cpu")
    assert star.representative.tolist() == [0, 0, 2]  # c is not within 6 of the kept a: it stays
    assert star.distance.tolist() == [0, 6, 0]
    # Preferring b (the middle) makes one star that covers both ends.
    star_b = dedup.near_groups(codes, 6, np.array([1, 0, 2]), linkage="star", device="cpu")
    assert star_b.representative.tolist() == [1, 1, 1]


def test_components_numpy_equals_scipy_and_bfs():
    rng = np.random.default_rng(5)
    n = 500
    pairs = rng.integers(0, n, size=(400, 2))
    adjacency = np.zeros((n, n), bool)
    adjacency[pairs[:, 0], pairs[:, 1]] = adjacency[pairs[:, 1], pairs[:, 0]] = True
    expected = reference_components(adjacency)
    np.testing.assert_array_equal(dedup._components_numpy(n, pairs), expected)
    np.testing.assert_array_equal(dedup.connected_components(n, pairs), expected)
    # A long path (worst case for naive label propagation) in shuffled order.
    path = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)[rng.permutation(n - 1)]
    np.testing.assert_array_equal(dedup._components_numpy(n, path), np.zeros(n, np.int64))
    assert dedup.connected_components(0, np.zeros((0, 2))).size == 0
    np.testing.assert_array_equal(dedup.connected_components(4, np.zeros((0, 2))), np.arange(4))


def test_preference_rank_keys_scores_and_ties():
    keys = ["b", "a", "c", "d"]
    np.testing.assert_array_equal(dedup.preference_rank(keys), [1, 0, 2, 3])
    scores = [0.5, 0.9, 0.9, np.nan]
    np.testing.assert_array_equal(dedup.preference_rank(keys, scores, "max"), [2, 0, 1, 3])  # tie: a < c
    np.testing.assert_array_equal(dedup.preference_rank(keys, scores, "min"), [0, 1, 2, 3])  # NaN last
    with pytest.raises(ValueError, match="prefer"):
        dedup.preference_rank(keys, scores, "best")
    with pytest.raises(ValueError, match="shape"):
        dedup.preference_rank(keys, [1.0])


def test_exact_groups_representative_is_best_ranked():
    digests = np.array(["x", "y", "x", "z", "y", "x"])
    rank = np.array([5, 1, 0, 2, 3, 4])
    g = dedup.exact_groups(digests, rank)
    assert g.representative.tolist() == [2, 1, 2, 3, 1, 2]
    assert g.distance.tolist() == [0] * 6
    assert g.n_duplicates == 3 and g.n_groups == 2
    assert dedup.exact_groups(np.array([], dtype=str), np.array([], dtype=np.int64)).representative.size == 0


@pytest.mark.parametrize("linkage", ["connected", "star"])
def test_kept_keys_do_not_depend_on_input_order(linkage):
    rng = np.random.default_rng(7)
    codes = planted_codes(300, rng)
    keys = np.array([f"k{i:05d}" for i in rng.permutation(300)])

    def kept(order):
        g = dedup.near_groups(codes[order], 8, dedup.preference_rank(keys[order]), linkage=linkage, device="cpu")
        return set(keys[order][~g.is_duplicate]), {
            keys[order][i]: keys[order][g.representative[i]] for i in range(len(order))
        }

    base = kept(np.arange(300))
    for _ in range(3):
        assert kept(rng.permutation(300)) == base


def test_near_groups_rejects_bad_arguments():
    codes = np.arange(4, dtype=np.uint64)
    with pytest.raises(ValueError, match="linkage"):
        dedup.near_groups(codes, 4, np.arange(4), linkage="single")
    with pytest.raises(ValueError, match="rank"):
        dedup.near_groups(codes, 4, np.arange(3))
    with pytest.raises(ValueError, match="max_distance"):
        dedup.near_groups(codes, 65, np.arange(4))
    assert dedup.near_groups(np.zeros(0, np.uint64), 4, np.zeros(0, np.int64)).representative.size == 0


def _flipped(rng, head, k):
    mask = np.bitwise_or.reduce(
        np.uint64(1) << rng.choice(64, k, replace=False).astype(np.uint64), initial=np.uint64(0)
    )
    return head ^ mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("r", [3, 6, 10, 11])
def test_dense_clusters_as_balls_equal_brute_force(seed, r, monkeypatch):
    """Dense near-copy clusters (made implicit balls by small sampling constants) give the pairwise result:
    representatives, distances and the pair count."""
    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 64)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 10)
    rng = np.random.default_rng(seed)
    heads = rng.integers(0, 2**64, 4, dtype=np.uint64)
    heads[1] = _flipped(rng, heads[0], int(rng.integers(3, 14)))  # a second cluster nearby
    codes = [_flipped(rng, heads[rng.integers(0, 4)], int(rng.integers(0, rng.integers(1, 8)))) for _ in range(500)]
    codes += list(rng.integers(0, 2**64, 200, dtype=np.uint64))
    codes = np.array(codes + [codes[i] for i in rng.integers(0, len(codes), 100)], np.uint64)
    rank = rng.permutation(len(codes))
    u, c = np.unique(codes, return_counts=True)
    assert dedup.code_graph(u, c, r).pivots.size > 0
    for linkage, reference in (("connected", reference_connected), ("star", reference_star)):
        got = dedup.near_groups(codes, r, rank, linkage=linkage, device="cpu", count_pairs=True)
        rep, dist = reference(codes, r, rank)
        np.testing.assert_array_equal(got.representative, rep, err_msg=linkage)
        np.testing.assert_array_equal(got.distance, dist, err_msg=linkage)
        assert got.n_pairs == int(((dense_distances(codes) <= r).sum() - len(codes)) // 2)


def _flip_rows(rng, heads: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Each row of ``heads`` (uint64[n, W]) with k distinct random bits of ``bits`` flipped."""
    out = heads.copy()
    for row in out:
        for b in rng.choice(bits, k, replace=False):
            row[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def reference_verified(codes, verify, r, v, rank, linkage):
    """The pairwise definition: a pair is linked when its codes are within r and its verify codes within v."""
    d = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    dv = np.bitwise_count(verify[:, None] ^ verify[None, :])
    adj = (d <= r) & (dv <= v)
    n = len(codes)
    if linkage == "connected":
        labels = reference_components(adj)
        rep = np.array([min(np.flatnonzero(labels == labels[i]), key=lambda j: rank[j]) for i in range(n)])
    else:
        rep = np.full(n, -1)
        for node in np.argsort(rank):
            if rep[node] < 0:
                rep[node] = node
                rep[(rep < 0) & adj[node]] = node
    return rep, d[np.arange(n), rep], dv[np.arange(n), rep], int((adj.sum() - n) // 2)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("linkage", ["star", "connected"])
def test_dense_256_bit_clusters_with_verification_equal_brute_force(seed, linkage, monkeypatch):
    """PDQ-like 256-bit clusters of distinct near-copies become implicit balls (over both the code and the
    verify code), and verified_near_groups still gives the pairwise answer: representatives, both distances
    and the linked pair count, with some near-copies whose verify code disagrees (pairs PDQ alone links)."""
    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 64)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 10)
    rng = np.random.default_rng(seed)
    heads = rng.integers(0, 2**64, (3, 4), dtype=np.uint64)
    heads[1] = _flip_rows(rng, heads[:1], 30, 256)[0]  # a second cluster within reach of the first
    vheads = rng.integers(0, 2**64, 3, dtype=np.uint64)
    vheads[1] = vheads[0] ^ np.uint64(0b1111)
    which = rng.integers(0, 3, 500)
    codes = np.concatenate([_flip_rows(rng, heads[w : w + 1], int(rng.integers(0, 14)), 256) for w in which])
    vflips = np.where(rng.random(500) < 0.9, rng.integers(0, 5, 500), rng.integers(10, 30, 500))
    verify = np.array([_flip_rows(rng, vheads[w : w + 1, None], k, 64)[0, 0] for w, k in zip(which, vflips)])
    extra = rng.integers(0, 500, 60)  # exact copies (same code and verify) and copies whose verify differs
    codes = np.concatenate([codes, codes[extra], rng.integers(0, 2**64, (100, 4), dtype=np.uint64)])
    verify = np.concatenate([verify, verify[extra] ^ (rng.random(60) < 0.5), rng.integers(0, 2**64, 100, np.uint64)])
    rank = rng.permutation(len(codes))
    u, inv, c = dedup.distinct_codes(np.concatenate([codes, verify[:, None]], axis=1))
    graph = dedup.code_graph(np.ascontiguousarray(u[:, :4]), c, 22, verify=u[:, 4], verify_distance=12)
    assert len(graph.pivots) > 0  # the clusters went the implicit way
    got, got_v = dedup.verified_near_groups(codes, verify, 22, 12, rank, linkage=linkage, device="cpu")
    rep, dist, vdist, n_pairs = reference_verified(codes, verify, 22, 12, rank, linkage)
    np.testing.assert_array_equal(got.representative, rep)
    np.testing.assert_array_equal(got.distance, dist)
    np.testing.assert_array_equal(got_v, vdist)
    assert got.n_pairs == n_pairs
    # unverified: the plain 256-bit grouping (near_groups) is the same algorithm
    plain = dedup.near_groups(codes, 22, rank, linkage=linkage, device="cpu", count_pairs=True)
    rep, dist, _, n_pairs = reference_verified(codes, np.zeros(len(codes), np.uint64), 22, 0, rank, linkage)
    np.testing.assert_array_equal(plain.representative, rep)
    np.testing.assert_array_equal(plain.distance, dist)
    assert plain.n_pairs == n_pairs


def _dihedral_composition() -> np.ndarray:
    """c[k, t]: the transform T_k o T_t (mmcurate.reference.TRANSFORMS' order)."""
    from mmcurate.reference import dihedral

    img = np.arange(12).reshape(3, 4)
    forms = dihedral(img)
    out = np.zeros((8, 8), np.int64)
    for t in range(8):
        for k, tk in enumerate(dihedral(forms[t])):
            out[k, t] = next(i for i, f in enumerate(forms) if f.shape == tk.shape and np.array_equal(f, tk))
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("linkage", ["star", "connected"])
def test_dense_dihedral_cluster_with_accept_equals_pairwise(seed, linkage, monkeypatch):
    """The default PDQ config (dihedral matching + an accept callback, as templates: keep) on dense clusters of
    distinct near-copies (implicit balls at these sampling constants), some rotated or flipped, some verify codes
    off, some template variants (accept refuses pairs of different labels): the pairwise definition's
    representatives, distances, transforms, verify distances and pair count."""
    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 64)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 10)
    monkeypatch.setattr(dedup, "PAIR_CHUNK", 16)  # explicit pairs checked in many chunks
    rng = np.random.default_rng(seed)
    comp = _dihedral_composition()
    heads = rng.integers(0, 2**64, (2, 8, 4), dtype=np.uint64)  # two images, the codes of their 8 transforms
    pheads = rng.integers(0, 2**64, (2, 8), dtype=np.uint64)
    n0 = 500
    which = rng.integers(0, 2, n0)
    t = np.where(rng.random(n0) < 0.15, rng.integers(1, 8, n0), 0)  # rotated / flipped near-copies
    variants = np.stack(
        [_flip_rows(rng, heads[w, comp[:, tt]], int(rng.integers(0, 12)), 256) for w, tt in zip(which, t)]
    )
    vflips = np.where(rng.random(n0) < 0.9, rng.integers(0, 5, n0), rng.integers(10, 30, n0))
    vv = np.stack([_flip_rows(rng, pheads[w, comp[:, tt], None], k, 64)[:, 0] for w, tt, k in zip(which, t, vflips)])
    label = np.where(rng.random(n0) < 0.08, rng.integers(1, 4, n0), 0)  # template variants
    extra = rng.integers(0, n0, 60)  # exact copies
    others = rng.integers(0, 2**64, (80, 8, 4), dtype=np.uint64)
    variants = np.concatenate([variants, variants[extra], others])
    vv = np.concatenate([vv, vv[extra], rng.integers(0, 2**64, (80, 8), dtype=np.uint64)])
    label = np.concatenate([label, label[extra], np.zeros(80, np.int64)])
    codes, verify = np.ascontiguousarray(variants[:, 0]), vv[:, 0].copy()
    n = len(codes)
    rank = rng.permutation(n)
    u, c = np.unique(codes, axis=0, return_counts=True)
    assert len(dedup.code_graph(u, c, 22).pivots) > 0  # the clusters went the implicit way

    def accept(a, b, transform):
        return label[a] == label[b]

    got, got_v = dedup.verified_near_groups(
        codes, verify, 22, 12, rank, linkage=linkage, device="cpu", variants=variants, verify_variants=vv,
        accept=accept,
    )  # fmt: skip
    i, j = np.triu_indices(n, 1)
    # a pair is matched from its first distinct tuple (the order of np.unique over code, verify and variants) to
    # the other, as the pairwise implementation did: ties between comparisons are broken on that side
    _, tup = np.unique(
        np.concatenate([codes, verify[:, None], variants.reshape(n, -1), vv], axis=1), axis=0, return_inverse=True
    )
    tup = tup.reshape(-1)
    i, j = np.where(tup[i] <= tup[j], i, j), np.where(tup[i] <= tup[j], j, i)
    d, _, vd = dedup.dihedral_match(variants, vv, i, j)
    linked = (d <= 22) & (vd <= 12) & (label[i] == label[j])
    adj = np.zeros((n, n), bool)
    adj[i[linked], j[linked]] = adj[j[linked], i[linked]] = True
    if linkage == "connected":
        labels = reference_components(adj)
        rep = np.array([min(np.flatnonzero(labels == labels[k]), key=lambda x: rank[x]) for k in range(n)])
    else:
        rep = np.full(n, -1)
        for node in np.argsort(rank):
            if rep[node] < 0:
                rep[node] = node
                rep[(rep < 0) & adj[node]] = node
    dist, transform, vdist = dedup.dihedral_match(variants, vv, np.arange(n), rep)
    assert (rep != np.arange(n)).sum() > 300 and (transform != 0).any()
    np.testing.assert_array_equal(got.representative, rep)
    np.testing.assert_array_equal(got.distance, dist)
    np.testing.assert_array_equal(got.transform, transform)
    np.testing.assert_array_equal(got_v, vdist)
    assert got.n_pairs == int(linked.sum())


def test_fold_symmetric_transforms_makes_near_identity_transforms_the_identity():
    """A transform within the radius of the sample's own code is symmetric (and folds into the identity); others
    stay, and the input is not modified."""
    rng = np.random.default_rng(5)
    v = rng.integers(0, 2**63, (3, 8, 4), dtype=np.uint64)
    v[0, 4] = v[0, 0] ^ np.uint64(0b111)  # 3 bits from its identity: nearly symmetric under flip
    v[1, 2] = v[1, 0] ^ np.uint64((1 << 23) - 1)  # 23 bits: beyond a 22-bit radius
    before = v.copy()
    assert np.argwhere(dedup.symmetric_transforms(v, 22)).tolist() == [[0, 4]]
    fv = dedup.fold_symmetric_transforms(v, 22)
    assert np.array_equal(v, before)
    assert np.array_equal(fv[0, 4], v[0, 0])
    assert np.argwhere((fv != v).any(axis=2)).tolist() == [[0, 4]]


@pytest.mark.parametrize("prints,rare", [(12, False), (12, True), (80, False)])
@pytest.mark.parametrize("linkage", ["star", "connected"])
def test_template_variants_in_a_dense_cluster_form_balls_of_their_own(linkage, prints, rare, monkeypatch):
    """One mockup, 12 prints, ~160 near-copies each (or 80 prints, ~25 each), all within the radius of one another:
    accept refuses pairs of different prints (templates: keep). The members the ball's anchor refuses are regrouped
    under anchors of their own (balls, not pairwise joins): the groups equal the pairwise definition's, and accept is
    asked a number of pairs that grows with members x prints (pairwise: ~1.7M of them; 80 prints: under half of what
    64 anchors and a pairwise join of the rest asked). With ``rare``, a 13th print of 2 copies sits nearest the
    cluster's centre: the anchor it gives takes too few, and the other prints still get theirs."""
    monkeypatch.setattr(dedup, "DENSE_SAMPLE", 256)
    monkeypatch.setattr(dedup, "DENSE_PAIR_BUDGET", 1000)
    rng = np.random.default_rng(3)
    head = rng.integers(0, 2**64, (1, 4), dtype=np.uint64)
    codes = np.concatenate([_flip_rows(rng, head, int(k), 256) for k in rng.integers(2, 7, 2000)])
    codes = np.unique(codes, axis=0)  # (samples sharing a code and verify code are linked as one)
    label = rng.integers(0, prints, len(codes))
    if rare:  # the image itself (the ball's anchor), then the rare print 1 bit from it
        codes = np.concatenate([codes, head, _flip_rows(rng, np.repeat(head, 2, axis=0), 1, 256)])
        label = np.concatenate([label, [0, prints, prints]])
        assert len(np.unique(codes, axis=0)) == len(codes)
    n = len(codes)
    verify = np.full(n, rng.integers(0, 2**64, dtype=np.uint64))
    rank = rng.permutation(n)
    asked = []

    def accept(a, b, transform):
        asked.append(len(a))
        return label[a] == label[b]

    got, _ = dedup.verified_near_groups(codes, verify, 22, 12, rank, linkage=linkage, device="cpu", accept=accept)
    assert sum(asked) < (40 if prints == 12 else 50) * n
    # every pair is within the radius: the pairwise definition groups each print apart, around its best-ranked copy
    best = {lab: min(np.flatnonzero(label == lab), key=lambda x: rank[x]) for lab in np.unique(label)}
    np.testing.assert_array_equal(got.representative, [best[lab] for lab in label])
