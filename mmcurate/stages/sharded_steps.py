"""The sharded global steps (``run: {global_mode: sharded}``) of exact_dedup, phash_dedup, semantic_dedup,
balance, clip_score_filter and split.

Each returns what the stage's ``run()`` returns on memory mode's table, row for row (rejects and duplicate links
in sample order, i.e. by sample id), plus the rejects' SAMPLE_ID column; per-sample columns come keyed by
SAMPLE_ID (see pipeline.global_sharded). Every task is a module-level function of a picklable tuple, run
through ``ctx.map_fn``.

Why the results are equal. Exact and near-duplicate grouping only ever compare the preference ranks of
samples in one group (exact) or one linked component (phash): ``rank_of`` is a total order (score, then the
unique key), so ranks computed over a partition or over the linked samples order them exactly as ranks over
all samples do. Semantic dedup runs ``semantic_dedup_streaming`` on the same normalised rows, sample and
assignment chunks the in-memory stage uses (see SemanticDedup.run). Balance runs curate.balanced_sample_from
over the same rows through a sharded EmbeddingSource: same id-hash sample, same assignment chunks (so the same
faiss calls), the same per-sample arrays after the data level.

Driver memory per step:
  exact_dedup     the duplicates (ids, keys) only; per partition task: its rows' id, key, source, digest, score.
  phash_dedup     the ids of the linked samples (those with a neighbour within max_distance) and their key,
                  source, pHash and score; no hash of an unlinked sample, no list of pairs (a group of 100k
                  copies costs its members, not its 5e9 pairs).
  semantic_dedup  the k-means sample (sample_size rows; null: 256 per cluster), then 12 bytes per
                  sample for the result (ids, cluster; keep, max_similarity and witness inside the streaming
                  call: 25 bytes), 16 more for scores when keep is by score; the duplicates' keys.
  balance         the data level's k-means sample (sample_size rows; null: 256 per cluster) and each refit's
                  rows (at most as many), then per sample: id 8 B, leaf label 4 B, squared distance 4 B, top
                  label 8 B (+ transient sorts); the rejected samples' keys (the rejects themselves).
  clip_score_filter  (id, score) of the scored samples: 16 bytes each; keep_fraction: the kept ids and the
                  keys of the samples tied at the cut score; the rejects.
  split           per sample: id 8 B, component and group ids, key rank, stratum (8 B each, int64) and the
                  split (+ transient sorts); the pHash links (16 bytes each, at most r + 1 per linked sample
                  besides small buckets' pairs), the group-column links (16 bytes each); the distinct
                  stratify values; a sample of keys for the sort's range boundaries. Never all keys.
"""
from __future__ import annotations

import functools
import math
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate import dedup
from mmcurate.pipeline.global_sharded import (HAMMING_ENTRIES_PER_PARTITION, KEY_ROWS_PER_PARTITION, partition_dir,
                                              read_partition, string_hash64, write_partitions)
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import SAMPLE_ID, GlobalResult, with_sample_ids
from mmcurate.stages.image import phash_codes



_with_ids = with_sample_ids


def _empty_rejects() -> pa.Table:
    return _with_ids(REJECTS_SCHEMA.empty_table(), [])


# ---------------------------------------------------------------------------------------------------------
# semantic_dedup: semantic_dedup_streaming over the survivors' embeddings


def _semantic_prepare_task(task):
    """One shard: its usable embeddings, normalised (embedding_matrix, with the run's common length when
    given), written with their ids as a Parquet shard for semantic_dedup_streaming; its no_embedding rejects;
    the length counts; the signed keep scores of its usable rows."""
    from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS
    from mmcurate.io import write_parquet_atomic
    from mmcurate.stages.semantic import _no_embedding_rejects, embedding_length_counts, embedding_matrix

    view, stage, dim, path = task
    p = stage.params
    score_col = next(iter(p.keep.values())) if isinstance(p.keep, dict) else None
    t = view.read(["key", "source", p.embedding_column, *([score_col] if score_col else [])])
    col = t.column(p.embedding_column)
    counts = embedding_length_counts(col, p.embedding_column, stage.name)
    x, ok, details = embedding_matrix(col, p.embedding_column, stage.name, dim=dim)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    rows = np.flatnonzero(ok)
    rejects = _with_ids(_no_embedding_rejects(t, ok, details, stage.name), ids[~ok])
    d = int(x.shape[1])
    if rows.size:
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), d)
        # row groups a multiple of the streaming chunk, so its chunks are the in-memory stage's assign chunks
        write_parquet_atomic(pa.table({"_id": pa.array(ids[rows], pa.int64()), "emb": emb}), path,
                             compression="none", row_group_size=DEFAULT_CHUNK_ROWS * 16)
    scores = stage.keep_policy(t.column(score_col).take(pa.array(rows))) if score_col else None
    return {"counts": counts, "d": d, "n_ok": int(rows.size), "rejects": rejects, "ids": ids[rows],
            "scores": scores, "path": path if rows.size else None}


def _prepare_embeddings(ctx, task_fn, stage, views, paths) -> list[dict]:
    """task_fn over every shard (view, stage, dim, path), redone with the common embedding length over all shards
    (as embedding_matrix picks it over memory mode's table) for the shards whose own length differs."""
    outs = list(ctx.map_fn(task_fn, [(v, stage, None, f) for v, f in zip(views, paths)]))
    width = max((o["counts"].size for o in outs), default=0)
    total = sum((np.pad(o["counts"], (0, width - o["counts"].size)) for o in outs), np.zeros(width, np.int64))
    if total.sum():
        d = int(total.argmax())
        redo = [i for i, o in enumerate(outs) if o["d"] != d]
        for i, o in zip(redo, ctx.map_fn(task_fn, [(views[i], stage, d, paths[i]) for i in redo])):
            outs[i] = o
    return outs


def semantic_dedup_sharded(stage, ctx) -> GlobalResult:
    """Embeddings of the survivors copied per shard (normalised, usable rows only, with their sample ids) into
    Parquet spill shards, then curate.semantic_dedup_streaming over them (k-means on the id-hash sample,
    streaming assignment, per-partition pairwise tasks, each duplicate's representative and cosine found in
    its partition task); keys fetched for the duplicates only."""
    from mmcurate import index as mindex
    from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS, EmbeddingShard, semantic_dedup_streaming
    from mmcurate.stages.semantic import _percentiles, semantic_duplicate_tables

    t0 = time.perf_counter()
    p = stage.params
    root = ctx.spill_dir(stage.name)
    views = ctx.views()
    paths = [str(root / "embeddings" / f"{v.index:05d}.parquet") for v in views]
    outs = _prepare_embeddings(ctx, _semantic_prepare_task, stage, views, paths)
    no_embedding = pa.concat_tables([o["rejects"] for o in outs]) if outs else _empty_rejects()
    m = sum(o["n_ok"] for o in outs)
    stats = {"no_embedding": int(no_embedding.num_rows), "eps": float(p.eps),
             "keep": p.keep if isinstance(p.keep, str) else dict(p.keep)}
    if m == 0:
        stats.update(clusters=0, duplicates=0, seconds=round(time.perf_counter() - t0, 4))
        return GlobalResult(rejected=no_embedding, stats=stats)
    keep = p.keep
    if isinstance(keep, dict):
        keep = (np.concatenate([o["ids"] for o in outs]), np.concatenate([o["scores"] for o in outs]))
    for o in outs:
        o.pop("ids"), o.pop("scores")
    k, s = stage.sizes_for(m)
    dev = mindex.resolve_device(p.device)
    if dev == "cuda" and not ctx.tasks_see_gpu:
        dev = "cpu"   # the assignment and pairwise tasks would not see the GPU (e.g. Ray tasks without one)
    shards = [EmbeddingShard.from_parquet(o["path"], "emb", id_column="_id") for o in outs if o["n_ok"]]
    r = semantic_dedup_streaming(shards, eps=float(p.eps), n_clusters=k, keep=keep, sample_size=s, seed=p.seed,
                                 device=dev, spill_dir=str(root), map_fn=ctx.map_fn, chunk_rows=DEFAULT_CHUNK_ROWS,
                                 representatives=True)
    del keep
    dup_ids, rep_ids, cos = r.representatives
    dup_keys, dup_sources, rep_keys = [], [], []
    if dup_ids.size:
        info = ctx.fetch(np.union1d(dup_ids, rep_ids), ["key", "source"])
        fid = info.column(SAMPLE_ID).to_numpy()
        at_d, at_r = pa.array(np.searchsorted(fid, dup_ids)), pa.array(np.searchsorted(fid, rep_ids))
        dup_keys = info.column("key").take(at_d).to_pylist()
        dup_sources = info.column("source").take(at_d).to_pylist()
        rep_keys = info.column("key").take(at_r).to_pylist()
    dup_rej, duplicates = semantic_duplicate_tables(stage.name, dup_keys, dup_sources, rep_keys, cos)
    rejected = pa.concat_tables([no_embedding, _with_ids(dup_rej, dup_ids)])
    columns = pa.table({"semantic_cluster": pa.array(r.cluster[r.keep].astype(np.int32), pa.int32()),
                        SAMPLE_ID: pa.array(r.ids[r.keep], pa.int64())})
    sizes = np.bincount(r.cluster, minlength=r.centroids.shape[0])
    stats.update(clusters=int(r.centroids.shape[0]), sample_size=int(s), duplicates=int(dup_ids.size),
                 kept=int(np.count_nonzero(r.keep)), cluster_size_percentiles=_percentiles(sizes),
                 seconds=round(time.perf_counter() - t0, 4),
                 sharded={k_: r.stats[k_] for k_ in ("n_partitions", "peak_task_rows", "largest_cluster_rows",
                                                     "spill_bytes", "seconds")})
    return GlobalResult(rejected=rejected, duplicates=duplicates, columns=columns, stats=stats)


# ---------------------------------------------------------------------------------------------------------
# balance: the data level over .npy spill shards, selection on per-sample arrays


def _balance_prepare_task(task):
    """One shard: its usable embeddings, normalised (embedding_matrix with the run's common length when given),
    saved as a C-ordered float32 .npy (read back by row ranges and by row, never whole); its no_embedding
    rejects; the length counts; the usable rows' sample ids."""
    from mmcurate.stages.semantic import _no_embedding_rejects, embedding_length_counts, embedding_matrix

    view, stage, dim, path = task
    p = stage.params
    t = view.read(["key", "source", p.embedding_column])
    col = t.column(p.embedding_column)
    counts = embedding_length_counts(col, p.embedding_column, stage.name)
    x, ok, details = embedding_matrix(col, p.embedding_column, stage.name, dim=dim)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    rows = np.flatnonzero(ok)
    if rows.size:
        tmp = path + ".tmp.npy"
        np.save(tmp, np.ascontiguousarray(x, np.float32))
        os.replace(tmp, path)
    return {"counts": counts, "d": int(x.shape[1]), "n_ok": int(rows.size), "ids": ids[rows],
            "rejects": _with_ids(_no_embedding_rejects(t, ok, details, stage.name), ids[~ok]),
            "path": path if rows.size else None}


def _balance_assign_task(task):
    """One shard's rows streamed chunk_rows at a time: (labels int32, squared L2 float32) to the centroids."""
    from mmcurate.curate.balance import assign_l2_chunk

    shard, centroids, device, chunk_rows = task
    parts = [assign_l2_chunk(x, centroids, device) for _, x in shard.chunks(chunk_rows)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _take_task(task):
    shard, rows = task
    return shard.take(rows)


class ShardedEmbeddings:
    """curate.balance's EmbeddingSource over .npy shards: positions run through the shards in order (ascending
    sample ids); assignment is one task per shard, streaming ``chunk_rows`` rows at a time (memory mode's chunks:
    semantic._assign_chunks); gather is one task per shard holding any of the rows asked for. The driver holds
    the ids and what it asked to gather."""

    def __init__(self, shards, ids: np.ndarray, map_fn, chunk_rows: int):
        self.shards, self.map_fn, self.chunk_rows = list(shards), map_fn, int(chunk_rows)
        self.ids = np.asarray(ids, np.int64)
        self.n = int(self.ids.size)
        self.starts = np.cumsum([0] + [sh.count for sh in self.shards])
        if self.starts[-1] != self.n or (self.n > 1 and not (self.ids[1:] > self.ids[:-1]).all()):
            raise ValueError("ShardedEmbeddings: ids must be ascending, one per row of the shards in order")
        self.dim = self.shards[0].dim if self.shards else 0
        self.gathered_rows = 0   # the most rows one gather held (reported; a test bounds it)

    def gather(self, positions):
        positions = np.asarray(positions, np.int64)
        out = np.empty((positions.size, self.dim), np.float32)
        shard = np.searchsorted(self.starts, positions, side="right") - 1
        tasks, where = [], []
        for j in np.unique(shard):
            sel = np.flatnonzero(shard == j)
            sel = sel[np.argsort(positions[sel], kind="stable")]
            tasks.append((self.shards[int(j)], positions[sel] - self.starts[j]))
            where.append(sel)
        for sel, rows in zip(where, self.map_fn(_take_task, tasks)):
            out[sel] = rows
        self.gathered_rows = max(self.gathered_rows, int(positions.size))
        return out

    def assign(self, centroids, device):
        parts = list(self.map_fn(_balance_assign_task, [(sh, centroids, device, self.chunk_rows)
                                                        for sh in self.shards]))
        if not parts:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def balance_sharded(stage, ctx) -> GlobalResult:
    """The survivors' usable embeddings written per shard (normalised, as .npy spill files), then
    curate.balanced_sample_from over them: k-means on the id-hash sample gathered from the shards, assignment
    and resampling steps as per-shard tasks returning (label, distance), upper levels on the centroids,
    selection on the per-sample labels. Keys fetched for the rejected samples only; balance_cluster keyed by
    sample id."""
    from mmcurate import index as mindex
    from mmcurate.curate.balance import balanced_sample_from
    from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS, EmbeddingShard
    from mmcurate.stages.semantic import balance_rejects

    t0 = time.perf_counter()
    p = stage.params
    root = ctx.spill_dir(stage.name)
    (root / "embeddings").mkdir()
    views = ctx.views()
    paths = [str(root / "embeddings" / f"{v.index:05d}.npy") for v in views]
    outs = _prepare_embeddings(ctx, _balance_prepare_task, stage, views, paths)
    no_embedding = pa.concat_tables([o["rejects"] for o in outs]) if outs else _empty_rejects()
    m = sum(o["n_ok"] for o in outs)
    stats = stage.base_stats(no_embedding.num_rows, m)
    if m == 0:
        stats.update(selected=0, seconds=round(time.perf_counter() - t0, 4))
        return GlobalResult(rejected=no_embedding, stats=stats)
    used = [o for o in outs if o["n_ok"]]
    ids = np.concatenate([o["ids"] for o in used])
    shards = [EmbeddingShard.from_npy(o["path"], o["ids"]) for o in used]
    for o in outs:
        o.pop("ids")
    spill_bytes = sum(os.path.getsize(o["path"]) for o in used)
    source = ShardedEmbeddings(shards, ids, ctx.map_fn, DEFAULT_CHUNK_ROWS)
    levels = stage.levels_for(m)
    dev = mindex.resolve_device(p.device)
    if dev == "cuda" and not ctx.tasks_see_gpu:
        dev = "cpu"   # the assignment tasks would not see the GPU (e.g. Ray tasks without one)
    picked, top, n_top = balanced_sample_from(source, stage.target_for(m), tuple(levels), dev, p.seed, p.method,
                                              p.strategy, sample_size=p.sample_size)
    selected = np.zeros(m, bool)
    selected[picked] = True
    out = np.flatnonzero(~selected)
    rejected = [no_embedding]
    if out.size:
        info = ctx.fetch(ids[out], ["key", "source"])   # ascending ids: out's order
        rejected.append(_with_ids(balance_rejects(stage.name, info.column("key").to_pylist(),
                                                  info.column("source").to_pylist(), top[out]), ids[out]))
        del info
    columns = pa.table({"balance_cluster": pa.array(top[picked].astype(np.int32), pa.int32()),
                        SAMPLE_ID: pa.array(ids[picked], pa.int64())})
    stats.update(stage.result_stats(picked, top, n_top, levels, m), seconds=round(time.perf_counter() - t0, 4),
                 sharded={"shards": len(shards), "spill_bytes": int(spill_bytes),
                          "largest_gather_rows": int(source.gathered_rows)})
    return GlobalResult(rejected=pa.concat_tables(rejected), columns=columns, stats=stats)


# ---------------------------------------------------------------------------------------------------------
# the survivors' key ranks: a distributed sort

KEY_SAMPLE_PER_PARTITION = 256     # keys sampled per range partition, for the boundaries


def _key_sample_task(task):
    """Evenly spaced keys of one shard (about ``k`` of them): the sample the range boundaries come from."""
    view, k = task
    keys = view.read(["key"]).column("key")
    if k <= 0 or len(keys) == 0:
        return []
    at = np.unique(np.linspace(0, len(keys) - 1, min(int(k), len(keys))).round().astype(np.int64))
    return keys.take(pa.array(at)).to_pylist()


def _key_range_task(task):
    """One shard's (key, id) rows written to the range partition their key falls in: partition p holds the keys
    in [bounds[p - 1], bounds[p]). Python str order is code point order, i.e. UTF-8 byte order: Arrow's."""
    view, bounds, root = task
    t = view.read(["key"]).select(["key", SAMPLE_ID])
    keys = np.array(t.column("key").to_pylist(), dtype=object)
    part = np.searchsorted(np.array(bounds, dtype=object), keys, side="right").astype(np.int64) if len(bounds) \
        else np.zeros(len(keys), np.int64)
    return write_partitions(t, part, len(bounds) + 1, root, f"s{view.index:05d}")


def _key_sort_task(part_dir):
    """The ids of one range partition in key order (Arrow's sort, as memory mode's pc.sort_indices)."""
    t = read_partition(part_dir)
    return t.column(SAMPLE_ID).take(pc.sort_indices(t.column("key"))).to_numpy().astype(np.int64)


def sharded_key_ranks(ctx, root) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending, rank of each id's key among all survivors' keys in Arrow's sort order): the rank memory
    mode gets from pc.sort_indices over all keys. Keys sampled per shard for range boundaries, range-partitioned
    per shard, sorted per partition; rank = the partition's offset + the rank within it. Only the boundary
    sample and int64 ids come back to the driver."""
    n_part = ctx.n_partitions(KEY_ROWS_PER_PARTITION)
    views = ctx.views()
    total = max(1, ctx.n_alive)
    want = KEY_SAMPLE_PER_PARTITION * n_part
    sample = [k for ks in ctx.map_fn(_key_sample_task, [(v, math.ceil(want * v.n_alive / total)) for v in views])
              for k in ks]
    sample = sorted(set(sample))
    bounds = [sample[int(len(sample) * (p + 1) / n_part)] for p in range(n_part - 1)] if len(sample) > 1 else []
    bounds = sorted(set(bounds))
    counts = np.zeros(len(bounds) + 1, np.int64)
    for c in ctx.map_fn(_key_range_task, [(v, bounds, str(root)) for v in views]):
        counts += c
    sorted_ids = [np.zeros(0, np.int64)] * counts.size
    for p, ids in zip(np.flatnonzero(counts), ctx.map_fn(_key_sort_task, [str(partition_dir(root, p))
                                                                          for p in np.flatnonzero(counts)])):
        sorted_ids[p] = ids
    by_rank = np.concatenate(sorted_ids)
    order = np.argsort(by_rank, kind="stable")
    return by_rank[order], order.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# split: links (pHash pairs, equal group values) -> components -> canonical ids by key rank -> assign_splits

GROUP_ROWS_PER_PARTITION = 1 << 22


def _value_hash(values) -> np.ndarray:
    """A by-value uint64 hash of a column for routing equal values to one partition."""
    from mmcurate.pipeline.global_sharded import _mix64

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
        return _mix64(v + np.uint64(0x9E3779B97F4A7C15))
    return string_hash64(pc.cast(arr, pa.string()))


def _split_scan_task(task):
    """One shard: its ids, its count of valid pHashes, the distinct stratify values, and its (value, id) rows
    of every group column routed by value hash to partitions under root/g<j>/."""
    view, p, n_part, root = task
    t = view.read([*p.group_columns, *([p.stratify_by] if p.stratify_by else []),
                   *(["phash"] if p.phash_radius is not None else [])])
    ids = t.column(SAMPLE_ID)
    n_phash = int(t.column("phash").is_valid().to_numpy(zero_copy_only=False).sum()) if p.phash_radius is not None \
        else 0
    strata = pc.unique(t.column(p.stratify_by).drop_null()) if p.stratify_by else None
    counts = []
    for j, col in enumerate(p.group_columns):
        g = pa.table({"v": t.column(col), "id": ids})
        g = g.filter(g.column("v").is_valid())
        part = (_value_hash(g.column("v")) % np.uint64(n_part)).astype(np.int64)
        counts.append(write_partitions(g, part, n_part, f"{root}/g{j}", f"s{view.index:05d}"))
    return ids.to_numpy().astype(np.int64), n_phash, strata, counts


def _group_links_task(part_dir):
    """Links of one partition of a group column: every member to its value's smallest id."""
    t = read_partition(part_dir)
    ids = t.column("id").to_numpy().astype(np.int64)
    values = pc.unique(t.column("v"))
    codes = np.asarray(pc.index_in(t.column("v"), value_set=values).to_numpy(zero_copy_only=False), np.int64)
    first = np.full(len(values), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, codes, ids)
    return np.stack([ids, first[codes]], axis=1)


def _strata_task(task):
    view, column, values = task
    t = view.read([column])
    return np.asarray(pc.index_in(t.column(column), value_set=values).fill_null(-1).to_numpy(zero_copy_only=False),
                      np.int64)


def _phash_by_component_task(task):
    """One shard's linked samples' pHash, routed by their component to partitions."""
    from mmcurate.pipeline.global_sharded import _mix64

    view, linked, comp, n_part, root = task
    t = view.read(["phash"])
    t = t.filter(t.column("phash").is_valid())
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    pos = np.minimum(np.searchsorted(linked, ids), linked.size - 1)
    on = linked[pos] == ids
    out = pa.table({"phash": t.column("phash").filter(pa.array(on))})
    part = (_mix64(comp[pos[on]].astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) % np.uint64(n_part))
    return write_partitions(out, part.astype(np.int64), n_part, root, f"s{view.index:05d}")


def _phash_pairs_task(task):
    part_dir, radius = task
    t = read_partition(part_dir)
    codes = pc.cast(t.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    return dedup.near_components(codes, radius, device="cpu")[1]


def _count_phash_pairs(ctx, linked, comp, radius, root) -> int:
    """The number of sample pairs within radius (memory mode's ``phash_links``): the linked samples' codes
    routed by component (every pair lies inside one), counted per partition by dedup.near_components, which
    counts a group of copies in closed form instead of listing its pairs."""
    n_part = ctx.n_partitions(HAMMING_ENTRIES_PER_PARTITION)
    counts = np.zeros(n_part, np.int64)
    for c in ctx.map_fn(_phash_by_component_task, [(v, linked, comp, n_part, str(root)) for v in ctx.views()]):
        counts += c
    return int(sum(ctx.map_fn(_phash_pairs_task, [(str(partition_dir(root, q)), radius)
                                                  for q in np.flatnonzero(counts)])))


def split_sharded(stage, ctx) -> GlobalResult | None:
    """The same groups, strata and assignment as Split.run, from per-shard and per-partition tasks: pHash links
    as below, group-column links by a shuffle of (value, id), connected components
    over the union on the driver (int arrays per sample), groups renumbered by their smallest key's rank from a
    distributed sort, strata from the distinct values. pHash links from curate.partitioned_linked_ids
    (the components of all the pairs, never a list of them). None (memory fallback) for phash_radius 64."""
    from mmcurate.curate.hamming_partition import partitioned_linked_ids
    from mmcurate.curate.splits import assign_splits
    from mmcurate.stages.split import SPLIT_NAMES, auto_phash_radius

    p = stage.params
    if p.phash_radius is not None and p.phash_radius != "auto" and int(p.phash_radius) > 63:
        return None
    t0 = time.perf_counter()
    root = ctx.spill_dir(stage.name)
    views = ctx.views()
    n_part = ctx.n_partitions(GROUP_ROWS_PER_PARTITION)
    scans = list(ctx.map_fn(_split_scan_task, [(v, p, n_part, str(root / "groups")) for v in views]))
    ids = np.concatenate([s[0] for s in scans])
    n = ids.size
    links = [np.zeros((0, 2), np.int64)]
    radius, n_phash_links = None, 0
    n_phash = sum(s[1] for s in scans)
    if p.phash_radius is not None and n_phash:
        radius = auto_phash_radius(n_phash) if p.phash_radius == "auto" else int(p.phash_radius)
        if radius > 63:
            return None
        hp = ctx.n_partitions(max(1, HAMMING_ENTRIES_PER_PARTITION // (radius + 1)))
        found = partitioned_linked_ids([functools.partial(phash_codes, v) for v in views], radius,
                                       n_partitions=hp, spill_dir=str(root / "phash"), map_fn=ctx.map_fn)
        links.append(found.links)
    for j in range(len(p.group_columns)):
        counts = sum(s[3][j] for s in scans)
        dirs = [str(partition_dir(root / "groups" / f"g{j}", q)) for q in np.flatnonzero(counts)]
        links += list(ctx.map_fn(_group_links_task, dirs))
    pairs = np.searchsorted(ids, np.concatenate(links))
    del links
    comp = np.unique(dedup.connected_components(n, pairs), return_inverse=True)[1].reshape(-1)
    if radius is not None and found.ids.size:
        n_phash_links = _count_phash_pairs(ctx, found.ids, comp[np.searchsorted(ids, found.ids)], radius,
                                           root / "phash_count")
    key_ids, key_rank = sharded_key_ranks(ctx, root / "keys")
    if not np.array_equal(key_ids, ids):
        raise RuntimeError("split: the key sort did not return every survivor once")
    first = np.full(int(comp.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, comp, key_rank)
    groups = np.argsort(np.argsort(first))[comp]
    del key_rank, comp, first
    strata = None
    if p.stratify_by:
        values = pc.unique(pa.chunked_array([s[2] for s in scans], type=ctx.schema.field(p.stratify_by).type))
        values = values.take(pc.sort_indices(values))
        strata = np.concatenate(list(ctx.map_fn(_strata_task, [(v, p.stratify_by, values) for v in views])))
    split = assign_splits(groups, ratios=tuple(p.ratios), strata=strata, seed=p.seed)
    stats = stage.result_stats(split, groups, n_phash_links, radius, t0)
    names = np.array(SPLIT_NAMES, dtype=object)[split]
    columns = pa.table({"split": pa.array(names.tolist(), pa.string()), SAMPLE_ID: pa.array(ids, pa.int64())})
    return GlobalResult(rejected=_empty_rejects(), columns=columns, stats=stats)
