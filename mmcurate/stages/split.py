"""`split`: leakage-free, stratified train/val/test assignment of the kept samples.

Samples that must not be separated share a group: near-duplicates that survived dedup (pHash within
`phash_radius`, looser than phash_dedup's removal radius where the run is small enough, so the "almost
duplicates" it kept stay together), and equal values of any `group_columns` (e.g. a semantic `cluster` for cluster-exclusive
splits, or a source/document id). Groups are merged into connected components and assigned whole with
`mmcurate.curate.assign_splits`, stratified by `stratify_by` (e.g. `cluster`) so every split covers the
same distribution. Deterministic under `seed`. The executor writes one shard directory per split.

Why `phash_radius: auto` (the default). Near-duplicate links are merged transitively, and two unrelated
64-bit codes fall within r bits with probability P(r) = sum_{k<=r} C(64, k) / 2^64, so each sample gets
about n * P(r) chance links. Once that nears 1 the link graph percolates: one giant group takes most
samples and no split can meet its ratio (r = 16 gives 3.9 chance links per sample at 100k and
39 at 1M; at 1M the bench took 25 s and 1.5 GB for the links). `auto` takes the largest r <= 12 with
n * P(r) <= 0.01: 12 up to 44k samples, 11 to 205k, 10 to 1M, 8 from 5.8M, 6 from 266M (so 6 at 1B). The
stats report the radius used, the expected chance links and the largest group.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate.dedup import chance_link_probability
from mmcurate.pipeline.stage import GlobalResult, GlobalStage, registry

SPLIT_NAMES = ("train", "val", "test")


@registry.register
class Split(GlobalStage):
    name = "split"

    @dataclass
    class Params:
        ratios: list = field(default_factory=lambda: [0.8, 0.1, 0.1])   # train, val, test
        seed: int = 0
        phash_radius: int | str | None = "auto"   # int bits, "auto" (see the module doc), None: no pHash groups
        group_columns: list = field(default_factory=list)
        stratify_by: str | None = None

        def validate(self):
            from mmcurate.curate.splits import _check_ratios

            if not isinstance(self.ratios, (list, tuple)) or len(self.ratios) != len(SPLIT_NAMES):
                raise ValueError(f"ratios must be [train, val, test], got {self.ratios!r}")
            _check_ratios(self.ratios)
            if self.phash_radius is not None and self.phash_radius != "auto" and (
                    isinstance(self.phash_radius, bool) or not isinstance(self.phash_radius, int)
                    or not 0 <= self.phash_radius <= 64):
                raise ValueError(f"phash_radius must be an integer 0..64, 'auto' or null, got {self.phash_radius!r}")
            if not isinstance(self.group_columns, (list, tuple)) or not all(
                    isinstance(c, str) for c in self.group_columns):
                raise ValueError(f"group_columns must be a list of column names, got {self.group_columns!r}")
            if not isinstance(self.seed, int) or isinstance(self.seed, bool):
                raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        cols = ["key", "source"]
        if p.phash_radius is not None:
            cols.append("phash")
        cols += list(p.group_columns)
        if p.stratify_by:
            cols.append(p.stratify_by)
        self.requires = tuple(dict.fromkeys(cols))

    def run(self, table: pa.Table) -> GlobalResult:
        from mmcurate.curate.splits import assign_splits, union_groups

        t0 = time.perf_counter()
        p = self.params
        n = table.num_rows
        labelings = [np.arange(n, dtype=np.int64)]  # every sample is at least its own group
        n_phash_links = 0
        radius = None
        if p.phash_radius is not None:
            codes = table.column("phash")
            valid = codes.is_valid().to_numpy(zero_copy_only=False)
            labels = np.full(n, -1, np.int64)
            idx = np.flatnonzero(valid)
            if idx.size:
                from mmcurate.curate.dedup import near_components

                c = np.asarray(codes.filter(pa.array(valid)).to_numpy(zero_copy_only=False), dtype=np.uint64)
                radius = auto_phash_radius(idx.size) if p.phash_radius == "auto" else int(p.phash_radius)
                # components from the distinct codes: a group of 100k copies is not 5e9 listed pairs
                labels[idx], n_phash_links = near_components(c, radius)
            labelings.append(labels)
        for col in p.group_columns:
            labelings.append(_factorize(table.column(col)))
        groups = _canonical_ids(union_groups(*labelings), table.column("key"))
        strata = _factorize(table.column(p.stratify_by)) if p.stratify_by else None
        split = assign_splits(groups, ratios=tuple(p.ratios), strata=strata, seed=p.seed)
        stats = self.result_stats(split, groups, n_phash_links, radius, t0)
        names = np.array(SPLIT_NAMES, dtype=object)[split]
        cols = pa.table({"key": table.column("key"), "split": pa.array(names.tolist(), pa.string())})
        return GlobalResult(columns=cols, stats=stats)

    def run_sharded(self, ctx) -> GlobalResult | None:
        """The same split from per-shard and per-partition tasks, without all keys in one process: see
        stages.sharded_steps.split_sharded."""
        from mmcurate.stages.sharded_steps import split_sharded

        return split_sharded(self, ctx)

    @staticmethod
    def result_stats(split: np.ndarray, groups: np.ndarray, n_phash_links: int, radius, t0: float) -> dict:
        """The step's stats from the split and canonical group id of every sample."""
        n = int(split.size)
        counts = {name: int((split == i).sum()) for i, name in enumerate(SPLIT_NAMES)}
        sizes = np.bincount(groups) if n else np.zeros(0, np.int64)
        stats = {
            "counts": counts,
            "ratios_achieved": {k: round(v / n, 4) for k, v in counts.items()} if n else {},
            "groups": int(sizes.size), "largest_group": int(sizes.max()) if n else 0,
            "phash_links": n_phash_links, "phash_radius": radius,
            "expected_chance_links_per_sample": (float(f"{n * chance_link_probability(radius):.3g}")
                                                 if radius is not None else None),
            "seconds": round(time.perf_counter() - t0, 4),
        }
        if n and sizes.max() > max(0.05 * n, 1):
            stats["warning"] = (f"the largest group holds {sizes.max() / n:.0%} of the samples, so the split "
                                "ratios cannot be met; lower phash_radius or drop coarse group_columns")
        return stats


#: Chance links per sample the automatic radius allows (far below the percolation threshold of 1).
CHANCE_LINK_BUDGET = 0.01
AUTO_MAX_RADIUS = 12


def auto_phash_radius(n: int, budget: float = CHANCE_LINK_BUDGET, max_radius: int = AUTO_MAX_RADIUS) -> int:
    """The largest radius <= max_radius whose expected chance links per sample, n * P(radius), stay
    <= budget (at least 0)."""
    r = 0
    while r < max_radius and n * chance_link_probability(r + 1) <= budget:
        r += 1
    return r


def _canonical_ids(groups: np.ndarray, keys: pa.ChunkedArray) -> np.ndarray:
    """Renumber groups by their smallest key, so the assignment does not depend on the row order."""
    if groups.size == 0:
        return groups
    key_rank = np.empty(groups.size, np.int64)
    key_rank[np.asarray(pc.sort_indices(keys))] = np.arange(groups.size)
    first = np.full(int(groups.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, groups, key_rank)
    return np.argsort(np.argsort(first))[groups]


def _factorize(column: pa.ChunkedArray) -> np.ndarray:
    """Equal values -> equal non-negative ids numbered in sorted value order (not row order, so results
    do not depend on the input order); nulls -> -1 (no group)."""
    values = pc.unique(column.drop_null())
    values = values.take(pc.sort_indices(values))
    ids = pc.index_in(column, value_set=values)
    return ids.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
