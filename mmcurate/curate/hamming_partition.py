"""Exact Hamming self-join over 64- or 256-bit codes that are never all on one worker: pigeonhole partitioning.

Split the code's bits into ``m = r + 1`` disjoint chunks (256-bit codes: at least 4, so a chunk value fits one
uint64). If ``popcount(a ^ b) <= r``, the r differing bits cannot touch all m >= r + 1 chunks, so a and b are
equal on at least one chunk. Every code is therefore sent to m buckets,
``(j, chunk_j(code))`` for each chunk j, and every pair within r meets in at least one bucket. A pair is
reported only by the bucket of the *first* chunk on which it agrees, so exactly once. Buckets are hashed into
P partitions; a partition is a self-contained task (its entries, grouped by bucket, joined per bucket: small
buckets by vectorised brute force, large ones by the native multi-index-hashing join ``ops.hamming_pairs``).

Result: the same pairs (by sample id) as ``ops.hamming_pairs`` on all codes at once.

Dihedral codes (``uint64[n, 8, W]``: each sample's codes of its 8 transformed pixel arrays, identity first, as
phash_dedup's PDQ path stores them): every transform is an entry of its own, tagged with its transform, and a pair
of samples is linked when a transform of one lies within the radius of the other's identity code (what
``ops.hamming_range`` with dihedral queries finds), never a sample with itself. Only the linked-ids join
(``partitioned_linked_ids``) takes them; it costs 8 times the entries.

Codes are those of ``ops.hamming`` (``as_code_rows``): 64-bit ``uint64[n]`` or 256-bit ``uint64[n, 4]``; entries
then carry a 32-byte code. For PDQ at r = 31 a chunk has 8 bits, so buckets are large and go to the native join.

Cost model (per sample): m = r + 1 entries of 18 bytes (code 8, id 8, chunk 1, partition routing 1) are
written in pass 1 and read once in pass 2; a task holds ~ m * n / P entries. For r = 10 and uniformly spread
codes (pHash is median-thresholded, so close to that) a chunk has 5-6 bits, so a bucket holds ~ n / 64 codes:
the per-bucket joins are what costs time, and they are independent. The driver holds only the pairs.

Pass 1 (``partition_codes``) runs per input shard, pass 2 (``partition_pairs``, or ``partition_linked`` for
only the ids that have a neighbour and links with the pairs' components, which stays linear in a cluster of
copies or near-copies) per partition; both go
through ``map_fn`` (builtin ``map`` by default; a process pool's or Ray's map for scale-out).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mmcurate.curate.hashing import GOLDEN, mix64

__all__ = [
    "chunk_layout",
    "partition_codes",
    "partition_pairs",
    "partitioned_hamming_pairs",
    "PartitionedPairs",
    "partition_linked",
    "partitioned_linked_ids",
    "PartitionedLinked",
]

#: Groups up to this size are joined by vectorised brute force (s * (s - 1) / 2 pairs), larger ones natively.
SMALL_GROUP = 48
#: Dihedral partitions up to this many distinct codes list their pairs in one join; larger ones keep dense clusters
#: implicit.
DIHEDRAL_PAIR_BUCKET = 2048
#: Threads of a bucket's native join: a partition is already one of many parallel tasks, and starting a thread
#: pool costs more than joining a bucket (300 PDQ codes: 6-10 ms on all cores against 0.8 ms on one).
TASK_THREADS = 1


def entry_dtype(words: int, dihedral: bool = False) -> np.dtype:
    """One spilled entry of the pigeonhole join: a code of ``words`` uint64, its sample id, the chunk it is filed
    under (and, with dihedral variants, which of the 8 transforms it is): 17 bytes at 64 bits, 41 at 256."""
    code = ("code", "<u8") if words == 1 else ("code", "<u8", (words,))
    return np.dtype([code, ("id", "<i8"), ("chunk", "u1"), *([("variant", "u1")] if dihedral else [])])


def _words(codes: np.ndarray) -> int:
    return 1 if codes.ndim == 1 else codes.shape[1]


def chunk_layout(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
    """The chunks as (bit offset, width), contiguous from bit 0, widths as equal as the bits allow: r + 1 of
    them, or bits / 64 if more (a chunk value must fit one uint64; more chunks keep the pigeonhole)."""
    r = int(max_distance)
    if bits not in (64, 256):
        raise ValueError(f"bits must be 64 or 256, got {bits!r}")
    if not 0 <= r <= min(bits - 1, 255):
        raise ValueError(
            f"max_distance must be in 0..{min(bits - 1, 255)} for pigeonhole partitioning, got {max_distance!r}"
        )
    m = max(r + 1, bits // 64)
    widths = [bits // m + (1 if j < bits % m else 0) for j in range(m)]
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).tolist()
    return list(zip((int(o) for o in offsets), widths))


def _chunk_values(codes: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Bits [offset, offset + width) of each code (uint64[n] or uint64[n, W]; a chunk may straddle two words)."""
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    if codes.ndim == 1:
        return (codes >> np.uint64(offset)) & mask
    word, shift = divmod(offset, 64)
    v = codes[:, word] >> np.uint64(shift)
    if shift + width > 64:
        v |= codes[:, word + 1] << np.uint64(64 - shift)
    return v & mask


def _distances(x: np.ndarray) -> np.ndarray:
    """Popcount of each XOR row."""
    d = np.bitwise_count(x)
    return d if x.ndim == 1 else d.sum(axis=1, dtype=np.uint16)


def _route(chunk: int, values: np.ndarray, n_partitions: int) -> np.ndarray:
    """Partition of each bucket (chunk, value): a splitmix64 mix, the same on every machine."""
    x = mix64(values ^ np.uint64((chunk * GOLDEN) & 0xFFFFFFFFFFFFFFFF))
    return (x % np.uint64(n_partitions)).astype(np.int64)


def _as_codes_ids(ids, codes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, codes, variant): dihedral codes [n, 8, W] come flattened to 8n codes, each id repeated, with the
    transform of each (None for plain codes)."""
    from mmcurate.ops.hamming import DIHEDRAL, as_code_rows

    raw = np.asarray(codes)
    dihedral = raw.ndim == 3
    if dihedral and raw.shape[1] != DIHEDRAL:
        raise ValueError(f"dihedral codes must have shape (n, 8, words), got {raw.shape}")
    codes = as_code_rows(raw.reshape(-1, raw.shape[2]) if dihedral else raw)
    ids = np.asarray(ids)
    n = raw.shape[0] if raw.ndim else 0
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, one per code ({n},), got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if not dihedral:
        return ids, codes, None
    variant = np.tile(np.arange(DIHEDRAL, dtype=np.uint8), n)
    # a transform whose code equals its sample's identity code (dedup.fold_symmetric_transforms) links exactly what
    # the identity links: no entries of its own
    own = np.repeat(codes[::DIHEDRAL], DIHEDRAL, axis=0)
    keep = (variant == 0) | (codes != own).reshape(len(codes), -1).any(axis=1)
    return np.repeat(ids, DIHEDRAL)[keep], codes[keep], variant[keep]


def partition_codes(ids, codes, max_distance: int, n_partitions: int, out_dir, name: str) -> list[int]:
    """Pass 1 for one shard: write its m entries per code to ``out_dir/p{P:05d}/{name}.npy`` (one file per
    partition that receives entries). Returns the entry count per partition. Files are written atomically,
    so a retried task overwrites the same names."""
    ids, codes, variant = _as_codes_ids(ids, codes)
    out_dir = Path(out_dir)
    layout = chunk_layout(max_distance, 64 * _words(codes))
    dtype = entry_dtype(_words(codes), variant is not None)
    parts, routes = [], []
    for j, (off, w) in enumerate(layout):
        e = np.empty(len(codes), dtype)
        e["code"], e["id"], e["chunk"] = codes, ids, j
        if variant is not None:
            e["variant"] = variant
        parts.append(e)
        routes.append(_route(j, _chunk_values(codes, off, w), n_partitions))
    entries = np.concatenate(parts) if parts else np.empty(0, dtype)
    route = np.concatenate(routes) if routes else np.empty(0, np.int64)
    order = np.argsort(route, kind="stable")
    entries, route = entries[order], route[order]
    bounds = np.searchsorted(route, np.arange(n_partitions + 1))
    counts = np.diff(bounds).tolist()
    for p in np.flatnonzero(np.diff(bounds)):
        d = out_dir / f"p{p:05d}"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, entries[bounds[p] : bounds[p + 1]])
        os.replace(tmp, d / f"{name}.npy")
    return counts


def _first_equal_chunk_is(x: np.ndarray, j: np.ndarray, layout) -> np.ndarray:
    """For XORs x of pairs found in buckets of chunk j: True where no chunk before j is equal (zero)."""
    ok = np.ones(len(x), bool)
    for jj, (off, w) in enumerate(layout[:-1]):
        before = j > jj
        if not before.any():
            break
        ok &= ~(before & (_chunk_values(x, off, w) == 0))
    return ok


def _join_entries(entries: np.ndarray, max_distance: int, layout) -> tuple[np.ndarray, np.ndarray]:
    """All reportable pairs among one partition's entries: (id pairs int64[m, 2] with id_a < id_b, dist)."""
    from mmcurate.ops.hamming import hamming_pairs

    if entries.size < 2:
        return np.empty((0, 2), np.int64), np.empty(0, np.uint8)
    chunk = entries["chunk"].astype(np.int64)
    vals = np.empty(entries.size, np.uint64)
    for j, (off, w) in enumerate(layout):
        sel = chunk == j
        vals[sel] = _chunk_values(entries["code"][sel], off, w)
    order = np.lexsort((entries["id"], vals, chunk))
    e, vals, chunk = entries[order], vals[order], chunk[order]
    new = np.ones(e.size, bool)
    new[1:] = (vals[1:] != vals[:-1]) | (chunk[1:] != chunk[:-1])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, e.size))
    a_parts, b_parts = [], []
    # small buckets: every pair of members, for all buckets of one size at once
    for s in np.unique(sizes[(sizes >= 2) & (sizes <= SMALL_GROUP)]):
        st = starts[sizes == s]
        ia, ib = np.triu_indices(int(s), 1)
        a_parts.append((st[:, None] + ia[None, :]).ravel())
        b_parts.append((st[:, None] + ib[None, :]).ravel())
    a = np.concatenate(a_parts) if a_parts else np.empty(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.empty(0, np.int64)
    if a.size:
        d = _distances(e["code"][a] ^ e["code"][b])
        keep = d <= max_distance
        a, b = a[keep], b[keep]
    # large buckets: the native multi-index-hashing join
    big_a, big_b = [a], [b]
    for st, s in zip(starts[sizes > SMALL_GROUP], sizes[sizes > SMALL_GROUP]):
        pairs, _ = hamming_pairs(e["code"][st : st + s], max_distance, device="cpu", num_threads=TASK_THREADS)
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        big_a.append(pairs[:, 0] + st)
        big_b.append(pairs[:, 1] + st)
    a, b = np.concatenate(big_a), np.concatenate(big_b)
    x = e["code"][a] ^ e["code"][b]
    first = _first_equal_chunk_is(x, chunk[a], layout)
    a, b, x = a[first], b[first], x[first]
    ida, idb = e["id"][a], e["id"][b]
    pairs = np.stack([np.minimum(ida, idb), np.maximum(ida, idb)], axis=1)
    return pairs, _distances(x).astype(np.uint8)


def partition_pairs(part_dir, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2 for one partition: read every shard's entries for it and return its pairs (by id) and distances."""
    files = sorted(Path(part_dir).glob("*.npy"))
    if not files:
        return np.empty((0, 2), np.int64), np.empty(0, np.uint8)
    entries = np.concatenate([np.load(f) for f in files])
    if "variant" in (entries.dtype.names or ()):
        raise ValueError("dihedral codes list no pairs here; partitioned_linked_ids links them")
    return _join_entries(entries, int(max_distance), chunk_layout(max_distance, 64 * _words(entries["code"])))


def partition_linked(part_dir, max_distance: int) -> np.ndarray:
    """Pass 2 for one partition, without listing pairs: links int64[k, 2] of ids whose union over all partitions
    has the same connected components as all pairs within max_distance, each member of a component of two or
    more samples linked to the component's first.

    The partition's distinct samples are grouped at once (dedup.near_components: copies collapsed, dense
    near-copy clusters never joined pairwise), not bucket by bucket: every pair within the radius meets in
    some bucket, so in some partition, and any further pair found across this partition's buckets is a true
    link too, so the components are the same. One native join per task instead of one per bucket: buckets
    hold ~n / 2^chunk bits codes and photo codes crowd some chunk values, so per-bucket calls cost a
    partition of 100k PDQ codes 5.5 s against 0.5 s. Links: at most one per linked sample, per partition it
    reaches (r + 1)."""
    from mmcurate.curate.dedup import near_components

    files = sorted(Path(part_dir).glob("*.npy"))
    if not files:
        return np.zeros((0, 2), np.int64)
    e = np.concatenate([np.load(f) for f in files])
    if "variant" in (e.dtype.names or ()):
        return _dihedral_partition_links(e, max_distance)
    ids, at = np.unique(e["id"], return_index=True)  # a sample reaches a partition once per chunk routed there
    labels = near_components(e["code"][at], max_distance, device="cpu", num_threads=TASK_THREADS)[0]
    _, first, inv, cnt = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    on = cnt[inv] > 1
    return np.stack([ids[on], ids[first[inv[on]]]], axis=1)


def _dihedral_partition_links(e: np.ndarray, max_distance: int) -> np.ndarray:
    """partition_linked over dihedral entries (a sample's 8 transform codes, variant 0 its identity): the
    partition's distinct (sample, transform) codes at once, as partition_linked joins identity codes. A pair links
    only between a sample's identity code and another sample's code under any transform; every such pair within
    the radius shares a chunk value, so meets in some bucket of some partition, and any further pair found across
    this partition's buckets is a true link too: the components are those of all the pairs. One native join per
    task, not per bucket: buckets of ~11-bit chunks hold ~8 n / 2048 chance entries each, and a call per bucket
    cost a 20k-sample partition ~40k Python calls (5k near-copies + 20k distinct: 80 s against 5 s)."""
    order = np.lexsort((e["variant"], e["id"]))
    e = e[order]
    first = np.ones(e.size, bool)  # a sample's code reaches a partition once per chunk routed there
    first[1:] = (e["id"][1:] != e["id"][:-1]) | (e["variant"][1:] != e["variant"][:-1])
    return _dihedral_links(e[first], max_distance)


def _dihedral_link(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Entry pairs that may link two samples under dihedral matching: two samples, one side an identity code."""
    return (a["id"] != b["id"]) & ((a["variant"] == 0) | (b["variant"] == 0))


def _dihedral_links(e: np.ndarray, max_distance: int) -> np.ndarray:
    """Links of distinct dihedral entries: the connected components of their linkable pairs within the
    radius, each sample of a component of two or more joined to the component's first. Without listing a dense
    near-copy cluster's pairs: identity against identity by dedup.near_components (copies collapsed, dense
    clusters kept implicit), and the other transforms against the identity codes by ops.hamming_range (few
    pairs, unless an image is near-symmetric under a transform)."""
    from mmcurate.curate.dedup import connected_components, near_components
    from mmcurate.ops.hamming import hamming_pairs, hamming_range

    ids, pos = np.unique(e["id"], return_inverse=True)
    pos = pos.reshape(-1)
    links = [np.zeros((0, 2), np.int64)]
    if e.size <= DIHEDRAL_PAIR_BUCKET:  # at most ~DIHEDRAL_PAIR_BUCKET^2 / 2 pairs: one join, less overhead
        found, _ = hamming_pairs(np.ascontiguousarray(e["code"]), max_distance, device="cpu", num_threads=TASK_THREADS)
        found = np.asarray(found, np.int64).reshape(-1, 2)
        found = found[_dihedral_link(e[found[:, 0]], e[found[:, 1]])]
        links.append(pos[found])
    ident = np.flatnonzero(e["variant"] == 0) if e.size > DIHEDRAL_PAIR_BUCKET else np.zeros(0, np.int64)
    other = np.flatnonzero(e["variant"] != 0)
    if ident.size > 1:
        labels = near_components(e["code"][ident], max_distance, device="cpu", num_threads=TASK_THREADS)[0]
        _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
        links.append(np.stack([pos[ident], pos[ident[first[inv.reshape(-1)]]]], axis=1))
    if ident.size and other.size:
        found, _ = hamming_range(
            np.ascontiguousarray(e["code"][ident]), np.ascontiguousarray(e["code"][other]), max_distance,
            num_threads=TASK_THREADS,
        )  # fmt: skip
        found = np.asarray(found, np.int64).reshape(-1, 2)
        q, j = other[found[:, 0]], ident[found[:, 1]]
        keep = e["id"][q] != e["id"][j]
        links.append(np.stack([pos[q[keep]], pos[j[keep]]], axis=1))
    labels = connected_components(ids.size, np.concatenate(links))
    _, first, inv, cnt = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    on = cnt[inv] > 1
    return np.stack([ids[on], ids[first[inv[on]]]], axis=1)


@dataclass
class PartitionedLinked:
    """ids: int64 sample ids with a neighbour within max_distance, sorted; links: int64[k, 2] id links with the
    connected components of all the pairs; stats: the partitioning's figures."""

    ids: np.ndarray
    links: np.ndarray
    stats: dict = field(default_factory=dict)


def _pass2_linked(task):
    part_dir, r = task
    return partition_linked(part_dir, r)


def partitioned_linked_ids(
    shards: Iterable, max_distance: int, n_partitions: int = 64, spill_dir: str | None = None, map_fn: Callable = map
) -> PartitionedLinked:
    """The ids of ``partitioned_hamming_pairs``' pairs (``np.unique(pairs)``) and links with the same connected
    components as those pairs, without materialising the pairs: memory per task is
    O(entries) and on the driver O(links), at most one per linked sample and partition (r + 1 per linked
    sample), whatever the size of a group of copies or near-copies.
    Arguments as for :func:`partitioned_hamming_pairs`; the caller groups the linked samples itself
    (dedup.near_groups / near_components over their codes gives the same groups as all the pairs)."""
    with _partitioned(shards, max_distance, n_partitions, spill_dir, map_fn) as (dirs, stats):
        parts = list(map_fn(_pass2_linked, dirs))
        links = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
        ids = np.unique(links)
        return PartitionedLinked(ids, links, {**stats, "linked": int(ids.size)})


@contextlib.contextmanager
def _partitioned(shards: Iterable, max_distance: int, n_partitions: int, spill_dir: str | None, map_fn: Callable):
    """Pass 1 of the pigeonhole join: every shard's entries spilled into partitions under ``spill_dir`` (a
    temporary directory, removed on exit, when None). Yields the non-empty partitions as pass-2 tasks and
    the partitioning's figures."""
    from mmcurate.pipeline.params import check_int

    check_int("n_partitions", n_partitions, 1)
    chunk_layout(max_distance, 256)  # the radius check, before any shard is read
    own = spill_dir is None
    spill = Path(tempfile.mkdtemp(prefix="mmcurate-hamming-")) if spill_dir is None else Path(spill_dir)
    spill.mkdir(parents=True, exist_ok=True)
    try:
        tasks = [(i, shard, int(max_distance), n_partitions, str(spill)) for i, shard in enumerate(shards)]
        counts = np.zeros(n_partitions, np.int64)
        n_codes, bits = 0, set()
        for c, n, b in map_fn(_pass1, tasks):
            counts += np.asarray(c, np.int64)
            n_codes += n
            bits.add(b)
        if len(bits) > 1:
            raise ValueError(f"shards mix code widths: {sorted(bits)} bits")
        layout = chunk_layout(max_distance, bits.pop() if bits else 64)
        dirs = [(str(spill / f"p{p:05d}"), int(max_distance)) for p in np.flatnonzero(counts)]
        stats = {
            "n_codes": int(n_codes),
            "max_distance": int(max_distance),
            "chunks": len(layout),
            "chunk_widths": [w for _, w in layout],
            "n_partitions": n_partitions,
            "entries": int(counts.sum()),
            "max_entries_per_partition": int(counts.max(initial=0)),
        }
        yield dirs, stats
    finally:
        if own:
            shutil.rmtree(spill, ignore_errors=True)


@dataclass
class PartitionedPairs:
    """pairs: int64[m, 2] sample ids (a < b), sorted; distances: uint8[m]; stats: the partitioning's figures."""

    pairs: np.ndarray
    distances: np.ndarray
    stats: dict = field(default_factory=dict)


def _pass1(task):
    i, shard, r, n_partitions, spill = task
    ids, codes = shard() if callable(shard) else shard
    ids, codes = np.asarray(ids), np.asarray(codes)
    if np.unique(ids).size != ids.size:
        raise ValueError(f"shard {i}: sample ids repeat; they must be unique")
    _, rows, _ = _as_codes_ids(ids, codes)
    counts = partition_codes(ids, codes, r, n_partitions, spill, f"s{i:06d}")
    return counts, len(ids), 64 * _words(rows)


def _pass2(task):
    part_dir, r = task
    return partition_pairs(part_dir, r)


def partitioned_hamming_pairs(
    shards: Iterable, max_distance: int, n_partitions: int = 64, spill_dir: str | None = None, map_fn: Callable = map
) -> PartitionedPairs:
    """All pairs of sample ids whose codes are within ``max_distance`` bits, over ``shards``: each an
    ``(ids, codes)`` pair of arrays (codes 64- or 256-bit, as ``ops.hamming`` takes them) or a picklable
    zero-argument callable returning one (so a task loads its own shard, e.g.
    ``functools.partial(read_phashes, path)``). Ids are int64 and must be unique across all
    shards (checked within each shard; across shards it is the caller's contract, as every id is a sample's
    position in the run). Exactly the pairs ``ops.hamming_pairs`` finds on all codes at once, mapped to ids.
    ``map_fn(f, tasks)`` runs the per-shard and per-partition tasks (each task is a picklable tuple; f is a
    module-level function). ``spill_dir`` receives the partitioned entries (a temporary directory, removed
    afterwards, when None)."""
    with _partitioned(shards, max_distance, n_partitions, spill_dir, map_fn) as (dirs, stats):
        pair_parts, dist_parts = [], []
        for pairs, dists in map_fn(_pass2, dirs):
            pair_parts.append(pairs)
            dist_parts.append(dists)
        pairs = np.concatenate(pair_parts) if pair_parts else np.empty((0, 2), np.int64)
        dists = np.concatenate(dist_parts) if dist_parts else np.empty(0, np.uint8)
        order = np.lexsort((pairs[:, 1], pairs[:, 0])) if pairs.size else np.empty(0, np.int64)
        return PartitionedPairs(pairs[order], dists[order], {**stats, "pairs": int(pairs.shape[0])})
