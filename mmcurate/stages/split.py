"""`split`: leakage-free, stratified train/val/test assignment of the kept samples.

Samples that must not be separated share a group: near-duplicates that survived dedup (pHash within
`phash_radius`, looser than phash_dedup's removal radius, so the "almost duplicates" it kept stay
together), and equal values of any `group_columns` (e.g. a semantic `cluster` for cluster-exclusive
splits, or a source/document id). Groups are merged into connected components and assigned whole with
`mmcurate.curate.assign_splits`, stratified by `stratify_by` (e.g. `cluster`) so every split covers the
same distribution. Deterministic under `seed`. The executor writes one shard directory per split.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.stage import GlobalResult, GlobalStage, registry

SPLIT_NAMES = ("train", "val", "test")


@registry.register
class Split(GlobalStage):
    name = "split"

    @dataclass
    class Params:
        ratios: list = field(default_factory=lambda: [0.8, 0.1, 0.1])   # train, val, test
        seed: int = 0
        phash_radius: int | None = 16          # None: do not group near-duplicates by pHash
        group_columns: list = field(default_factory=list)
        stratify_by: str | None = None

        def validate(self):
            from mmcurate.curate.splits import _check_ratios

            if not isinstance(self.ratios, (list, tuple)) or len(self.ratios) != len(SPLIT_NAMES):
                raise ValueError(f"ratios must be [train, val, test], got {self.ratios!r}")
            _check_ratios(self.ratios)
            if self.phash_radius is not None and (isinstance(self.phash_radius, bool)
                                                  or not isinstance(self.phash_radius, int)
                                                  or not 0 <= self.phash_radius <= 64):
                raise ValueError(f"phash_radius must be an integer 0..64 or null, got {self.phash_radius!r}")
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
        if p.phash_radius is not None:
            codes = table.column("phash")
            valid = codes.is_valid().to_numpy(zero_copy_only=False)
            labels = np.full(n, -1, np.int64)
            idx = np.flatnonzero(valid)
            if idx.size:
                from mmcurate.curate.dedup import connected_components
                from mmcurate.ops import hamming_pairs

                c = np.asarray(codes.filter(pa.array(valid)).to_numpy(zero_copy_only=False), dtype=np.uint64)
                pairs, _ = hamming_pairs(c, p.phash_radius)
                n_phash_links = int(len(pairs))
                labels[idx] = connected_components(idx.size, np.asarray(pairs, np.int64).reshape(-1, 2))
            labelings.append(labels)
        for col in p.group_columns:
            labelings.append(_factorize(table.column(col)))
        groups = _canonical_ids(union_groups(*labelings), table.column("key"))
        strata = _factorize(table.column(p.stratify_by)) if p.stratify_by else None
        split = assign_splits(groups, ratios=tuple(p.ratios), strata=strata, seed=p.seed)
        names = np.array(SPLIT_NAMES, dtype=object)[split]
        counts = {name: int((split == i).sum()) for i, name in enumerate(SPLIT_NAMES)}
        sizes = np.bincount(groups) if n else np.zeros(0, np.int64)
        stats = {
            "counts": counts,
            "ratios_achieved": {k: round(v / n, 4) for k, v in counts.items()} if n else {},
            "groups": int(sizes.size), "largest_group": int(sizes.max()) if n else 0,
            "phash_links": n_phash_links, "seconds": round(time.perf_counter() - t0, 4),
        }
        cols = pa.table({"key": table.column("key"), "split": pa.array(names.tolist(), pa.string())})
        return GlobalResult(columns=cols, stats=stats)


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
