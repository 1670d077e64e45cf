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

import os
import time

import numpy as np
import pyarrow as pa

from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import SAMPLE_ID, GlobalResult, with_sample_ids

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
    from mmcurate.stages.embeddings import embedding_length_counts, embedding_matrix
    from mmcurate.stages.semantic import no_embedding_rejects

    view, stage, dim, path = task
    p = stage.params
    score_col = next(iter(p.keep.values())) if isinstance(p.keep, dict) else None
    t = view.read(["key", "source", p.embedding_column, *([score_col] if score_col else [])])
    col = t.column(p.embedding_column)
    counts = embedding_length_counts(col, p.embedding_column, stage.name)
    x, ok, details = embedding_matrix(col, p.embedding_column, stage.name, dim=dim)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    rows = np.flatnonzero(ok)
    rejects = _with_ids(no_embedding_rejects(t, ok, details, stage.name), ids[~ok])
    d = int(x.shape[1])
    if rows.size:
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), d)
        # row groups a multiple of the streaming chunk, so its chunks are the in-memory stage's assign chunks
        write_parquet_atomic(
            pa.table({"_id": pa.array(ids[rows], pa.int64()), "emb": emb}),
            path,
            compression="none",
            row_group_size=DEFAULT_CHUNK_ROWS * 16,
        )
    scores = stage.keep_policy(t.column(score_col).take(pa.array(rows))) if score_col else None
    return {
        "counts": counts,
        "d": d,
        "n_ok": int(rows.size),
        "rejects": rejects,
        "ids": ids[rows],
        "scores": scores,
        "path": path if rows.size else None,
    }


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
    from mmcurate.stages.semantic import cluster_size_percentiles, semantic_duplicate_tables

    t0 = time.perf_counter()
    p = stage.params
    root = ctx.spill_dir(stage.name)
    views = ctx.views()
    paths = [str(root / "embeddings" / f"{v.index:05d}.parquet") for v in views]
    outs = _prepare_embeddings(ctx, _semantic_prepare_task, stage, views, paths)
    no_embedding = pa.concat_tables([o["rejects"] for o in outs]) if outs else _empty_rejects()
    m = sum(o["n_ok"] for o in outs)
    stats = {
        "no_embedding": int(no_embedding.num_rows),
        "eps": float(p.eps),
        "keep": p.keep if isinstance(p.keep, str) else dict(p.keep),
    }
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
        dev = "cpu"  # the assignment and pairwise tasks would not see the GPU (e.g. Ray tasks without one)
    shards = [EmbeddingShard.from_parquet(o["path"], "emb", id_column="_id") for o in outs if o["n_ok"]]
    r = semantic_dedup_streaming(
        shards,
        eps=float(p.eps),
        n_clusters=k,
        keep=keep,
        sample_size=s,
        seed=p.seed,
        device=dev,
        spill_dir=str(root),
        map_fn=ctx.map_fn,
        chunk_rows=DEFAULT_CHUNK_ROWS,
        representatives=True,
    )
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
    columns = pa.table(
        {
            "semantic_cluster": pa.array(r.cluster[r.keep].astype(np.int32), pa.int32()),
            SAMPLE_ID: pa.array(r.ids[r.keep], pa.int64()),
        }
    )
    sizes = np.bincount(r.cluster, minlength=r.centroids.shape[0])
    stats.update(
        clusters=int(r.centroids.shape[0]),
        sample_size=int(s),
        duplicates=int(dup_ids.size),
        kept=int(np.count_nonzero(r.keep)),
        cluster_size_percentiles=cluster_size_percentiles(sizes),
        seconds=round(time.perf_counter() - t0, 4),
        sharded={
            k_: r.stats[k_]
            for k_ in ("n_partitions", "peak_task_rows", "largest_cluster_rows", "spill_bytes", "seconds")
        },
    )
    return GlobalResult(rejected=rejected, duplicates=duplicates, columns=columns, stats=stats)


# ---------------------------------------------------------------------------------------------------------
# balance: the data level over .npy spill shards, selection on per-sample arrays


def _balance_prepare_task(task):
    """One shard: its usable embeddings, normalised (embedding_matrix with the run's common length when given),
    saved as a C-ordered float32 .npy (read back by row ranges and by row, never whole); its no_embedding
    rejects; the length counts; the usable rows' sample ids."""
    from mmcurate.stages.embeddings import embedding_length_counts, embedding_matrix
    from mmcurate.stages.semantic import no_embedding_rejects

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
    return {
        "counts": counts,
        "d": int(x.shape[1]),
        "n_ok": int(rows.size),
        "ids": ids[rows],
        "rejects": _with_ids(no_embedding_rejects(t, ok, details, stage.name), ids[~ok]),
        "path": path if rows.size else None,
    }


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
        self.gathered_rows = 0  # the most rows one gather held (reported; a test bounds it)

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
        parts = list(
            self.map_fn(_balance_assign_task, [(sh, centroids, device, self.chunk_rows) for sh in self.shards])
        )
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
        dev = "cpu"  # the assignment tasks would not see the GPU (e.g. Ray tasks without one)
    picked, top, n_top = balanced_sample_from(
        source, stage.target_for(m), tuple(levels), dev, p.seed, p.method, p.strategy, sample_size=p.sample_size
    )
    selected = np.zeros(m, bool)
    selected[picked] = True
    out = np.flatnonzero(~selected)
    rejected = [no_embedding]
    if out.size:
        info = ctx.fetch(ids[out], ["key", "source"])  # ascending ids: out's order
        rejected.append(
            _with_ids(
                balance_rejects(
                    stage.name, info.column("key").to_pylist(), info.column("source").to_pylist(), top[out]
                ),
                ids[out],
            )
        )
        del info
    columns = pa.table(
        {
            "balance_cluster": pa.array(top[picked].astype(np.int32), pa.int32()),
            SAMPLE_ID: pa.array(ids[picked], pa.int64()),
        }
    )
    stats.update(
        stage.result_stats(picked, top, n_top, levels, m),
        seconds=round(time.perf_counter() - t0, 4),
        sharded={
            "shards": len(shards),
            "spill_bytes": int(spill_bytes),
            "largest_gather_rows": int(source.gathered_rows),
        },
    )
    return GlobalResult(rejected=pa.concat_tables(rejected), columns=columns, stats=stats)
