"""`split`: leakage-free, stratified train/val/test assignment of the kept samples.

Samples that must not be separated share a group: near-duplicates that survived dedup (pHash within
`phash_radius`, looser than phash_dedup's removal radius where the run is small enough, so the "almost
duplicates" it kept stay together), and equal values of any `group_columns` (e.g. a semantic `cluster` for
cluster-exclusive splits, or a source/document id). Groups are merged into connected components and assigned whole with
`mmcurate.curate.assign_splits`, stratified by `stratify_by` (e.g. `cluster`) so every split covers the
same distribution. On instruction data, samples of one `image_group` (instruction_dedup's column: the conversations
about one image, or about exact or perceptual copies of it) are one group too whenever that column exists
(`image_group: false` turns it off), so no image reaches two splits. Deterministic under `seed`. The executor
writes one shard directory per split.

Why `phash_radius: auto` (the default). Near-duplicate links are merged transitively, and two unrelated
64-bit codes fall within r bits with probability P(r) = sum_{k<=r} C(64, k) / 2^64, so each sample gets
about n * P(r) chance links. Once that nears 1 the link graph percolates: one giant group takes most
samples and no split can meet its ratio (r = 16 gives 3.9 chance links per sample at 100k and
39 at 1M; at 1M the bench took 25 s and 1.5 GB for the links). `auto` takes the largest r <= 12 with
n * P(r) <= 0.01: 12 up to 44k samples, 11 to 205k, 10 to 1M, 8 from 5.8M, 6 from 266M (so 6 at 1B). The
stats report the radius used, the expected chance links and the largest group.

PDQ (`near_hash`). When the run has PDQ columns (`phash_dedup` with `hash: pdq`), `near_hash: auto` (the
default) links near-duplicates by PDQ-256 instead: samples of PDQ quality >= `min_quality` (default 1, as
phash_dedup: flat images never link) within `pdq_threshold` bits (default 31, looser than phash_dedup's 22 so
the near-copies it kept stay together), through the same `ctx.near_links` (256-bit codes in memory and sharded
mode alike). The threshold is fixed, not chosen from n: two unrelated 256-bit codes fall within 31 bits with
probability 8.3e-38, so 8.3e-28 chance links per sample at 10B samples, 26 orders of magnitude below
percolation (docs/scaling.md). `near_hash: phash` or `pdq` forces one hash, null turns near-duplicate groups
off.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate.dedup import chance_link_probability
from mmcurate.curate.hashing import GOLDEN, mix64
from mmcurate.curate.splits import SPLIT_NAMES
from mmcurate.pipeline.global_sharded import string_hash64
from mmcurate.pipeline.params import check_bool, check_int, check_seed, is_int
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    StageError,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.stages.image import DEFAULT_PDQ_MIN_QUALITY, pdq_codes, phash_codes

NEAR_HASHES = ("auto", "phash", "pdq", None)
NEAR_HASH_COLUMNS = {"phash": ("phash",), "pdq": ("pdq", "pdq_quality")}
#: PDQ-256 bits within which split links near-duplicates: fixed, since unrelated codes fall within it with
#: probability 8.3e-38 (8.3e-28 chance links per sample at 10B samples: no percolation at any n), and looser than
#: phash_dedup's removal threshold (22) so the near-copies it kept stay in one split.
SPLIT_PDQ_THRESHOLD = 31


@registry.register
class Split(GlobalStage):
    """Train/val/test assignment (8:1:1 by default) that keeps near-duplicate images (pHash, or PDQ where the run
    has it), image groups and group columns in one split, optionally stratified by a column (module docstring)."""

    name = "split"

    @dataclass
    class Params:
        ratios: list = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, val, test
        seed: int = 0
        phash_radius: int | str | None = "auto"  # int bits, "auto" (see the module doc), None: no pHash groups
        near_hash: str | None = "auto"  # "auto": pdq where the run has PDQ columns, else phash; None: no near groups
        pdq_threshold: int = SPLIT_PDQ_THRESHOLD  # PDQ-256 bits (fixed: far below percolation at any n)
        min_quality: int = DEFAULT_PDQ_MIN_QUALITY  # PDQ quality below this never links
        group_columns: list = field(default_factory=list)
        stratify_by: str | None = None
        image_group: bool = True  # also group by instruction_dedup's image_group column when there is one

        def validate(self):
            from mmcurate.curate.splits import check_ratios

            if not isinstance(self.ratios, (list, tuple)) or len(self.ratios) != len(SPLIT_NAMES):
                raise ValueError(f"ratios must be [train, val, test], got {self.ratios!r}")
            check_ratios(self.ratios)
            if self.phash_radius not in ("auto", None) and not (
                is_int(self.phash_radius) and 0 <= self.phash_radius <= 64
            ):
                raise ValueError(f"phash_radius must be an integer 0..64, 'auto' or null, got {self.phash_radius!r}")
            if self.near_hash not in NEAR_HASHES:
                raise ValueError(f"near_hash must be 'auto', 'phash', 'pdq' or null, got {self.near_hash!r}")
            check_int("pdq_threshold", self.pdq_threshold, 0, 128)
            check_int("min_quality", self.min_quality, 0, 100)
            if not isinstance(self.group_columns, (list, tuple)) or not all(
                isinstance(c, str) for c in self.group_columns
            ):
                raise ValueError(f"group_columns must be a list of column names, got {self.group_columns!r}")
            check_seed(self.seed)
            check_bool("image_group", self.image_group)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        cols = ["key", "source"]
        if p.near_hash == "pdq" or (p.near_hash == "phash" and p.phash_radius is not None):
            cols += NEAR_HASH_COLUMNS[p.near_hash]
        cols += list(p.group_columns)
        if p.stratify_by:
            cols.append(p.stratify_by)
        self.requires = tuple(dict.fromkeys(cols))
        if p.near_hash == "auto":  # resolved in run() from the columns the run has
            self.reads_if_present = (*NEAR_HASH_COLUMNS["pdq"], *NEAR_HASH_COLUMNS["phash"])

    def near_hash_of(self, columns) -> str | None:
        """The hash near-duplicates are linked by in a run with these columns: "phash", "pdq" or None."""
        p = self.params
        near = p.near_hash
        if near == "auto":
            near = "pdq" if all(c in columns for c in NEAR_HASH_COLUMNS["pdq"]) else "phash"
        return None if near == "phash" and p.phash_radius is None else near

    def run(self, ctx) -> GlobalResult:
        """Links (pHash or PDQ pairs from the context's Hamming primitive, equal group-column values from a shuffle of
        (value, id)), connected components over their union (int arrays per sample), groups renumbered by their
        smallest key's rank (the context's key ranks: one sort, or a distributed sort), strata from the distinct
        values, then assign_splits. Memory mode is the same with one partition in process."""
        from mmcurate.curate.dedup import connected_components
        from mmcurate.curate.splits import assign_splits

        near = self.near_hash_of(ctx.column_names)
        needed = dict.fromkeys([*self.requires, *(NEAR_HASH_COLUMNS[near] if near else [])])
        missing = [c for c in needed if c not in ctx.column_names]
        if missing:
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing)}")
        t0 = time.perf_counter()
        p = dataclasses.replace(self.params, near_hash=near)
        if p.image_group and "image_group" in ctx.column_names and "image_group" not in p.group_columns:
            p = dataclasses.replace(p, group_columns=[*p.group_columns, "image_group"])
        views = ctx.views()
        n_part = ctx.n_partitions(GROUP_ROWS_PER_PARTITION)
        store = ctx.partitions(self.name)
        scans = list(ctx.map_fn(_split_scan_task, [(v, p, n_part, store) for v in views]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        n = ids.size
        links = [np.zeros((0, 2), np.int64)]
        radius, n_near_links, code_shape = None, 0, (1, 1)
        n_codes = sum(s[1] for s in scans)
        if near == "phash" and n_codes:
            radius = auto_phash_radius(n_codes) if p.phash_radius == "auto" else int(p.phash_radius)
            shards = [functools.partial(phash_codes, v) for v in views]
        elif near == "pdq" and n_codes:
            radius, code_shape = p.pdq_threshold, (4, 1)
            shards = [functools.partial(pdq_codes, v, p.min_quality) for v in views]
        if radius is not None:
            near_links, n_near_links = ctx.near_links(self.name, shards, radius, code_shape)
            links.append(near_links)
        for j in range(len(p.group_columns)):
            counts = sum(s[3][j] for s in scans)
            group_store = store.sub(f"g{j}")
            links += list(ctx.map_fn(_group_links_task, [(group_store, q) for q in np.flatnonzero(counts)]))
        pairs = np.searchsorted(ids, np.concatenate(links))
        del links
        comp = np.unique(connected_components(n, pairs), return_inverse=True)[1].reshape(-1)
        key_ids, key_rank = ctx.key_ranks(self.name)
        if not np.array_equal(key_ids, ids):
            raise RuntimeError("split: the key sort did not return every survivor once")
        first = np.full(int(comp.max()) + 1 if n else 0, np.iinfo(np.int64).max)
        np.minimum.at(first, comp, key_rank)
        groups = np.argsort(np.argsort(first))[comp]
        del key_rank, comp, first
        strata = None
        if p.stratify_by:
            values = pc.unique(pa.chunked_array([s[2] for s in scans], type=ctx.schema.field(p.stratify_by).type))
            values = values.take(pc.sort_indices(values))
            strata = np.concatenate(list(ctx.map_fn(_strata_task, [(v, p.stratify_by, values) for v in views])))
        split = assign_splits(groups, ratios=tuple(p.ratios), strata=strata, seed=p.seed)
        stats = self.result_stats(split, groups, n_near_links, radius, t0, near, n_codes)
        names = np.array(SPLIT_NAMES, dtype=object)[split]
        columns = pa.table({"split": pa.array(names.tolist(), pa.string()), SAMPLE_ID: pa.array(ids, pa.int64())})
        return GlobalResult(rejected=with_sample_ids(REJECTS_SCHEMA.empty_table(), []), columns=columns, stats=stats)

    @staticmethod
    def result_stats(
        split: np.ndarray,
        groups: np.ndarray,
        n_links: int,
        radius,
        t0: float,
        near: str | None = "phash",
        n_codes: int | None = None,
    ) -> SplitStats:
        """The step's stats from the split and canonical group id of every sample; ``n_links``: the sample pairs
        within ``radius`` of the ``near`` hash, which ``n_codes`` samples have (None: all)."""
        n = int(split.size)
        counts = {name: int((split == i).sum()) for i, name in enumerate(SPLIT_NAMES)}
        sizes = np.bincount(groups) if n else np.zeros(0, np.int64)
        bits = 256 if near == "pdq" else 64
        warning = None
        if n and sizes.max() > max(0.05 * n, 1):
            warning = (
                f"the largest group holds {sizes.max() / n:.0%} of the samples, so the split "
                f"ratios cannot be met; lower {'pdq_threshold' if near == 'pdq' else 'phash_radius'} or drop "
                "coarse group_columns"
            )
        return SplitStats(
            counts=counts,
            ratios_achieved={k: round(v / n, 4) for k, v in counts.items()} if n else {},
            groups=int(sizes.size),
            largest_group=int(sizes.max()) if n else 0,
            near_hash=near,
            phash_links=n_links if near == "phash" else None,
            phash_radius=radius if near == "phash" else None,
            pdq_links=n_links if near == "pdq" else None,
            pdq_threshold=radius if near == "pdq" else None,
            expected_chance_links_per_sample=(
                float(f"{(n if n_codes is None else n_codes) * chance_link_probability(radius, bits):.3g}")
                if radius is not None
                else None
            ),
            warning=warning,
            seconds=round(time.perf_counter() - t0, 4),
        )


@dataclass
class SplitStats(StepStats):
    counts: dict | None = None  # samples per split
    ratios_achieved: dict | None = None
    groups: int | None = None  # groups kept together (near-duplicates, group_columns)
    largest_group: int | None = None
    near_hash: str | None = None  # the hash near-duplicates were linked by: phash, pdq or None
    phash_links: int | None = None
    phash_radius: int | None = None
    pdq_links: int | None = None  # sample pairs within pdq_threshold (near_hash: pdq)
    pdq_threshold: int | None = None
    expected_chance_links_per_sample: float | None = None
    warning: str | None = None  # why the ratios could not be met


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


# split's tasks (module level: they travel to worker processes and Ray workers by reference)
GROUP_ROWS_PER_PARTITION = 1 << 22


def _value_hash(values) -> np.ndarray:
    """A by-value uint64 hash of a column for routing equal values to one partition."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return string_hash64(arr)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        wide = pa.uint64() if pa.types.is_unsigned_integer(t) else pa.int64()
        v = np.asarray(pc.cast(arr, wide).to_numpy(zero_copy_only=False)).view(np.uint64)
        return mix64(v + np.uint64(GOLDEN))
    return string_hash64(pc.cast(arr, pa.string()))


def _split_scan_task(task):
    """One shard: its ids, its count of near-duplicate codes (valid pHashes, or PDQs of quality >= min_quality:
    ``p.near_hash`` is resolved), the distinct stratify values, and its (value, id) rows of every group column
    routed by value hash to the partitions of store.sub("g<j>")."""
    view, p, n_part, store = task
    phash = ["phash"] if p.near_hash == "phash" else []
    t = view.read([*p.group_columns, *([p.stratify_by] if p.stratify_by else []), *phash])
    ids = t.column(SAMPLE_ID)
    n_codes = 0
    if p.near_hash == "phash":
        n_codes = int(t.column("phash").is_valid().to_numpy(zero_copy_only=False).sum())
    elif p.near_hash == "pdq":
        n_codes = len(pdq_codes(view, p.min_quality)[0])  # the linking's own rule for which samples have a code
    strata = pc.unique(t.column(p.stratify_by).drop_null()) if p.stratify_by else None
    counts = []
    for j, col in enumerate(p.group_columns):
        g = pa.table({"v": t.column(col), "id": ids})
        g = g.filter(g.column("v").is_valid())
        part = (_value_hash(g.column("v")) % np.uint64(n_part)).astype(np.int64) if n_part > 1 else None
        counts.append(store.sub(f"g{j}").write(g, part, n_part, f"s{view.index:05d}"))
    return ids.to_numpy().astype(np.int64), n_codes, strata, counts


def _group_links_task(task):
    """Links of one partition of a group column: every member to its value's smallest id."""
    store, q = task
    t = store.read(q)
    ids = t.column("id").to_numpy().astype(np.int64)
    values = pc.unique(t.column("v"))
    codes = np.asarray(pc.index_in(t.column("v"), value_set=values).to_numpy(zero_copy_only=False), np.int64)
    first = np.full(len(values), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, codes, ids)
    return np.stack([ids, first[codes]], axis=1)


def _strata_task(task):
    view, column, values = task
    t = view.read([column])
    return np.asarray(
        pc.index_in(t.column(column), value_set=values).fill_null(-1).to_numpy(zero_copy_only=False), np.int64
    )
