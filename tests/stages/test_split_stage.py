"""The split stage: near-duplicates and grouped samples never straddle splits; ratios and strata hold."""

import numpy as np
import pyarrow as pa
import pytest

from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.stage import SAMPLE_ID, StageError, registry


def _phash_table(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    # plant near-duplicate chains: every 10th sample is 1-3 bits from the previous one
    for i in range(1, n, 10):
        flips = rng.choice(64, size=rng.integers(1, 4), replace=False)
        codes[i] = codes[i - 1] ^ np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64))
    return pa.table(
        {
            "key": [f"k{i:05d}" for i in range(n)],
            "source": ["s"] * n,
            "phash": pa.array(codes, pa.uint64()),
            "doc": [f"d{i // 7}" for i in range(n)],  # 7 samples per document
            "cluster": rng.integers(0, 12, n).astype(np.int32),
        }
    )


def _splits(res, table):
    """key -> split; the step's columns are keyed by sample id (here the table's row number)."""
    keys = table.column("key").to_pylist()
    ids, splits = res.columns.column(SAMPLE_ID).to_pylist(), res.columns.column("split").to_pylist()
    return {keys[i]: s for i, s in zip(ids, splits)}


def test_near_duplicates_and_groups_share_a_split():
    t = _phash_table()
    stage = registry.create("split", {"phash_radius": 4, "group_columns": ["doc"], "stratify_by": "cluster"})
    res = run_on_table(stage, t)
    split = _splits(res, t)
    keys = t.column("key").to_pylist()
    codes = t.column("phash").to_numpy()
    for i in range(1, len(keys), 10):
        assert split[keys[i]] == split[keys[i - 1]]
    docs = t.column("doc").to_pylist()
    by_doc = {}
    for k, d in zip(keys, docs):
        by_doc.setdefault(d, set()).add(split[k])
    assert all(len(s) == 1 for s in by_doc.values())
    # brute force: no pair within the radius across splits
    d = np.bitwise_count(codes[:, None] ^ codes[None, :])
    i, j = np.nonzero(np.triu(d <= 4, 1))
    assert all(split[keys[a]] == split[keys[b]] for a, b in zip(i, j))
    counts = res.stats.counts
    assert sum(counts.values()) == t.num_rows
    assert abs(counts["train"] / t.num_rows - 0.8) < 0.02 and abs(counts["test"] / t.num_rows - 0.1) < 0.02


def test_stratified_and_deterministic():
    t = _phash_table(seed=1)
    a = _splits(run_on_table(registry.create("split", {"stratify_by": "cluster", "seed": 3}), t), t)
    reversed_rows = t.take(np.arange(t.num_rows)[::-1])
    b = _splits(
        run_on_table(registry.create("split", {"stratify_by": "cluster", "seed": 3}), reversed_rows), reversed_rows
    )
    assert a == b
    clusters = t.column("cluster").to_pylist()
    keys = t.column("key").to_pylist()
    for c in range(12):
        members = [a[k] for k, cl in zip(keys, clusters) if cl == c]
        assert abs(members.count("train") / len(members) - 0.8) < 0.06


def test_params_are_checked():
    with pytest.raises(StageError, match="ratios"):
        registry.create("split", {"ratios": [0.5, 0.5]})
    with pytest.raises(StageError, match="ratios must sum to 1"):
        registry.create("split", {"ratios": [0.5, 0.4, 0.4]})
    with pytest.raises(StageError, match="unknown parameter.*'ratio'.*valid:.*ratios"):
        registry.create("split", {"ratio": [0.8, 0.1, 0.1]})


def test_auto_radius_keeps_chance_links_below_percolation():
    from mmcurate.stages.split import auto_phash_radius, chance_link_probability

    assert [auto_phash_radius(n) for n in (1000, 10**5, 10**6, 10**9)] == [12, 11, 10, 6]
    for n in (1000, 10**5, 10**6, 10**9):
        r = auto_phash_radius(n)
        assert n * chance_link_probability(r) <= 0.01 and (r == 12 or n * chance_link_probability(r + 1) > 0.01)
    assert chance_link_probability(64) == 1.0 and chance_link_probability(0) == 2.0**-64

    # 60k unrelated codes: a fixed 16-bit radius links ~2.3 chance pairs per sample, so one group swallows
    # most samples and the ratios fail (the stats warn); the automatic radius keeps groups to planted ones.
    t = _phash_table(n=60000, seed=5)
    fixed = run_on_table(registry.create("split", {"phash_radius": 16}), t)
    auto = run_on_table(registry.create("split", {}), t)
    assert fixed.stats.largest_group > 0.5 * t.num_rows and fixed.stats.warning
    assert abs(fixed.stats.ratios_achieved["train"] - 0.8) > 0.05
    assert auto.stats.phash_radius == 11 and auto.stats.largest_group <= 10 and auto.stats.warning is None
    assert abs(auto.stats.ratios_achieved["train"] - 0.8) < 0.01
    s = _splits(auto, t)
    keys = t.column("key").to_pylist()
    for i in range(1, 60000, 10):  # the planted 1-3 bit near-duplicates still share a split
        assert s[keys[i]] == s[keys[i - 1]]


def _pdq_table(n=2000, seed=0):
    """Unrelated PDQ-256 codes with planted near-copies (every 10th sample 1..30 bits from the previous one:
    beyond phash_dedup's 22 too), unrelated pHashes (pHash links none of them), and one planted pair whose copy
    has PDQ quality 0 (never linked)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64, (n, 4), dtype=np.uint64)
    for i in range(1, n, 10):
        codes[i] = codes[i - 1]
        for b in rng.choice(256, int(rng.integers(1, 31)), replace=False):
            codes[i, b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    quality = np.full(n, 80, np.int16)
    quality[11] = 0
    raw = pa.py_buffer(np.ascontiguousarray(codes, "<u8").tobytes())
    return pa.table(
        {
            "key": [f"k{i:05d}" for i in range(n)],
            "source": ["s"] * n,
            "phash": pa.array(rng.integers(0, 2**64, n, dtype=np.uint64), pa.uint64()),
            "pdq": pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, raw]),
            "pdq_quality": pa.array(quality),
        }
    ), codes


def test_pdq_near_copies_never_straddle_splits():
    t, codes = _pdq_table()
    res = run_on_table(registry.create("split", {}), t)  # near_hash auto: the run has PDQ columns
    assert res.stats.near_hash == "pdq" and res.stats.pdq_threshold == 31 and res.stats.phash_links is None
    split = _splits(res, t)
    keys = t.column("key").to_pylist()
    good = t.column("pdq_quality").to_numpy() >= 1
    d = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    linked = np.triu((d <= 31) & good[:, None] & good[None, :], 1)
    i, j = np.nonzero(linked)
    assert len(i) >= 190  # the planted pairs (but the quality-0 one)
    assert all(split[keys[a]] == split[keys[b]] for a, b in zip(i, j))
    assert res.stats.pdq_links == len(i) and not linked[10, 11]
    assert 0 < res.stats.expected_chance_links_per_sample < 1e-30
    # linked by pHash instead (unrelated codes here), the planted near-copies scatter over the splits
    by_phash = _splits(run_on_table(registry.create("split", {"near_hash": "phash"}), t), t)
    assert any(by_phash[keys[a]] != by_phash[keys[b]] for a, b in zip(i, j))
    off = run_on_table(registry.create("split", {"near_hash": None}), t)
    assert off.stats.near_hash is None and off.stats.groups == t.num_rows


def test_pdq_threshold_stays_far_below_percolation_at_any_n():
    from mmcurate.stages.split import CHANCE_LINK_BUDGET, SPLIT_PDQ_THRESHOLD, chance_link_probability

    # 10^12 samples, each compared with 8 dihedral variants of every other: still ~1e-25 chance links per sample
    assert 8 * 10**12 * chance_link_probability(SPLIT_PDQ_THRESHOLD, bits=256) < 1e-20 * CHANCE_LINK_BUDGET


def test_near_hash_params_are_checked():
    with pytest.raises(StageError, match="near_hash"):
        registry.create("split", {"near_hash": "dhash"})
    with pytest.raises(StageError, match="pdq_threshold"):
        registry.create("split", {"pdq_threshold": 300})
    assert {"pdq", "pdq_quality"} <= set(registry.create("split", {"near_hash": "pdq"}).requires)
    assert "phash" not in registry.create("split", {"near_hash": "pdq"}).requires
    t, _ = _pdq_table(n=50)
    with pytest.raises(StageError, match="lacks column.*pdq"):
        run_on_table(registry.create("split", {"near_hash": "pdq"}), t.drop_columns(["pdq", "pdq_quality"]))
