"""assign_splits / union_groups: no group crosses splits, ratios and per-stratum shares, determinism."""

import numpy as np
import pytest

from mmcurate.curate import assign_splits, union_groups


def random_groups(rng, n, max_size):
    sizes = rng.integers(1, max_size + 1, n)
    g = np.repeat(np.arange(n), sizes)[:n]
    return rng.permutation(g) * 7 + 3  # arbitrary, non-contiguous ids


def assert_no_leak(groups, split):
    for gid in np.unique(groups):
        assert np.unique(split[groups == gid]).size == 1


@pytest.mark.parametrize("seed", range(6))
def test_no_group_crosses_splits_and_ratios(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    groups = random_groups(rng, n, max_size=int(rng.integers(1, 30)))
    ratios = (0.8, 0.1, 0.1)
    s = assign_splits(groups, ratios, seed=seed)
    assert s.dtype == np.int8 and s.shape == (n,)
    assert_no_leak(groups, s)
    share = np.bincount(s, minlength=3) / n
    max_group = np.bincount(np.unique(groups, return_inverse=True)[1]).max()
    assert np.abs(share - ratios).max() <= max(2 * max_group / n, 1e-3)


def test_stratified_shares():
    rng = np.random.default_rng(1)
    n = 20000
    strata = rng.integers(0, 10, n)
    # groups stay inside a stratum mostly: id = stratum * 10^6 + small id
    groups = strata * 1_000_000 + rng.integers(0, 400, n)
    s = assign_splits(groups, (0.7, 0.2, 0.1), strata=strata, seed=0)
    assert_no_leak(groups, s)
    for st in range(10):
        m = strata == st
        share = np.bincount(s[m], minlength=3) / m.sum()
        max_group = np.bincount(np.unique(groups[m], return_inverse=True)[1]).max()
        assert np.abs(share - (0.7, 0.2, 0.1)).max() <= 2 * max_group / m.sum() + 1e-3, (st, share)


def test_many_tiny_strata_do_not_all_go_to_train():
    n = 3000
    strata = np.arange(n) // 2  # 1500 strata of 2 singleton groups
    s = assign_splits(np.arange(n), strata=strata)
    np.testing.assert_allclose(np.bincount(s, minlength=3) / n, (0.8, 0.1, 0.1), atol=0.01)


def test_group_spanning_strata_uses_majority():
    groups = np.array([0, 0, 0, 1, 2, 3, 4])
    strata = np.array([5, 5, 6, 6, 6, 6, 6])
    s = assign_splits(groups, (0.5, 0.5, 0.0), strata=strata)
    assert_no_leak(groups, s)
    assert (s < 2).all()  # zero ratio: test split empty


def test_deterministic_and_order_independent():
    rng = np.random.default_rng(3)
    groups = random_groups(rng, 4000, 12)
    strata = (groups // 7) % 5
    a = assign_splits(groups, strata=strata, seed=11)
    np.testing.assert_array_equal(a, assign_splits(groups, strata=strata, seed=11))
    p = rng.permutation(groups.size)
    np.testing.assert_array_equal(a[p], assign_splits(groups[p], strata=strata[p], seed=11))
    assert not np.array_equal(a, assign_splits(groups, strata=strata, seed=12))


def test_edge_cases():
    assert assign_splits(np.zeros(0, np.int64)).shape == (0,)
    assert (assign_splits(np.zeros(100, np.int64)) == 0).all()  # one giant group -> train
    assert assign_splits(np.array([1, 2])).shape == (2,)
    assert (assign_splits(np.arange(10), (0.0, 1.0, 0.0)) == 1).all()
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(np.arange(10), (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match=">= 0"):
        assign_splits(np.arange(10), (1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match="strata"):
        assign_splits(np.arange(10), strata=np.arange(9))
    s = assign_splits(np.array(["a", "b", "a", "c"] * 50), (0.5, 0.5))
    assert s[0] == s[2]


def test_union_groups_components():
    exact = np.array([0, 0, 1, 2, 3, 4, -1])
    phash = np.array([-1, 9, 9, -1, 8, 8, -1])
    sem = np.array([5, 6, 7, 7, 10, 11, 12])
    comp = union_groups(exact, phash, sem)
    np.testing.assert_array_equal(comp, [0, 0, 0, 0, 1, 1, 2])


def test_union_then_split_property():
    rng = np.random.default_rng(7)
    n = 3000
    a = np.where(rng.random(n) < 0.5, rng.integers(0, 800, n), -1)
    b = np.where(rng.random(n) < 0.3, rng.integers(0, 800, n), -1)
    comp = union_groups(a, b)
    s = assign_splits(comp, seed=1)
    for lab in (a, b):
        for gid in np.unique(lab[lab >= 0]):
            assert np.unique(s[lab == gid]).size == 1
