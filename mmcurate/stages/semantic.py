"""Semantic global steps over image embeddings: semantic_dedup (SemDeDup), balance (semantic-balance sampling).

Both read an embedding column (``embedding_column``, default ``image_embedding`` as written by
``clip_embed``): a fixed_size_list or list of float16/float32 per sample. Rows are converted to one
float32 [n, d] matrix (flatten + reshape, no per-row Python) and re-normalised (fp16 storage loses a
little of the unit norm). A null, wrong-length, non-finite or zero-norm embedding is a per-sample
reject with reason ``no_embedding``; a column of the wrong type is a StageError.

semantic_dedup
    ``mmcurate.curate.semantic_dedup`` (spherical k-means, then within each cluster every sample with
    cosine >= 1 - eps to a more keepable member is a duplicate). k-means trains on ``sample_size`` samples
    (null: 256 per cluster, faiss's own cap, or all when there are fewer), drawn by ``curate.semantic_stream``'s
    id-hash rule; every sample then goes to its nearest centroid. ``run: {global_mode: sharded}`` runs the
    same computation as ``semantic_dedup_streaming`` (embeddings streamed from the survivor shards,
    per-cluster work as tasks) with identical results; there the sample is held in memory (at most 50,000
    clusters x 256 x d x 4 bytes by default). Duplicates are rejected
    (``duplicate_semantic``, detail ``cosine 0.973 to <key>``) and listed in duplicates.parquet (kind
    ``semantic``, distance 1 - cosine) pointing at their *kept* representative (the witness chain of the
    curate result followed to the sample this stage keeps). Adds ``semantic_cluster`` (int32).
balance
    ``mmcurate.curate.balanced_sample`` (hierarchical k-means with resampling, balanced sampling down
    the hierarchy, or a flat per-cluster cap) to ``target`` samples or ``fraction`` of them. The data level's
    k-means trains on ``sample_size`` samples (null: 256 per cluster, or all when fewer) drawn by the id-hash
    rule, every sample is assigned in the streaming chunks, and its resampling refits gather at most
    ``sample_size`` rows; ``run: {global_mode: sharded}`` runs the same computation over the survivor shards
    (stages.sharded_steps.balance_sharded) with identical results. Samples not
    selected are rejected (``balance``, detail naming their top-level cluster). Adds ``balance_cluster``
    (the top-level cluster id). Stats: ``cluster_balance_stats`` (Gini, entropy, size percentiles, and the
    per-cluster ``sizes`` up to 4096 clusters, which the report draws) of the top-level cluster sizes before
    and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmcurate.curate.percentiles import percentile_summary
from mmcurate.pipeline.params import check_choice, check_device, check_int, check_number, check_seed, check_text, is_int
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA, rejects_table
from mmcurate.pipeline.stage import SAMPLE_ID, SHARD_SHIFT, GlobalResult, GlobalStage, StageError, registry
from mmcurate.stages.embeddings import (
    DEFAULT_EMBEDDING_COLUMN,
    embedding_matrix,
)

POINTS_PER_CLUSTER = 1000  # semantic_dedup's default cluster size: n_clusters = round(n / 1000)
MAX_DEFAULT_CLUSTERS = 50_000  # cap on that default (an explicit n_clusters is only capped at n)
TRAIN_POINTS_PER_CLUSTER = 256  # default k-means sample: 256 per cluster (faiss's max_points_per_centroid)
MIN_POINTS_PER_BALANCE_CLUSTER = 4  # balance levels are clipped so a cluster has at least this many inputs
#: Percentiles of the cluster sizes in semantic_dedup's stats (with the mean).
CLUSTER_SIZE_PERCENTILES = (0, 50, 90, 99, 100)


# ---------------------------------------------------------------------------------------------------------
# helpers


def no_embedding_rejects(table: pa.Table, ok: np.ndarray, details: list, stage: str) -> pa.Table:
    idx = np.flatnonzero(~ok)
    if not idx.size:
        return REJECTS_SCHEMA.empty_table()
    return rejects_table(
        table.column("key").take(idx).to_pylist(),
        table.column("source").take(idx).to_pylist(),
        stage,
        "no_embedding",
        [details[i] for i in idx],
    )


def cluster_size_percentiles(sizes: np.ndarray) -> dict:
    """semantic_dedup's cluster_size_percentiles (kept under this name for SemanticDedup.run and
    stages.sharded_steps, which call it)."""
    return percentile_summary(sizes, CLUSTER_SIZE_PERCENTILES)


def _concat_rejects(parts) -> pa.Table:
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else REJECTS_SCHEMA.empty_table()


# ---------------------------------------------------------------------------------------------------------
# semantic_dedup


@registry.register
class SemanticDedup(GlobalStage):
    name = "semantic_dedup"
    uses_sample_ids = True  # the k-means sample and the assignment chunks follow the run's sample ids

    @dataclass
    class Params:
        eps: float = 0.05
        n_clusters: int | None = None  # None: about POINTS_PER_CLUSTER samples per cluster
        keep: object = "hard"  # "hard" | "easy" | "random" | {"max": column} | {"min": column}
        device: str = "auto"
        seed: int = 0
        embedding_column: str = DEFAULT_EMBEDDING_COLUMN
        sample_size: int | None = None  # rows k-means trains on; None: 256 per cluster (all when fewer)

        def validate(self):
            check_int("sample_size", self.sample_size, 1, optional="all samples")
            check_number("eps", self.eps, 0, 1, lo_open=True, hi_open=True)
            check_int("n_clusters", self.n_clusters, 1, optional=True)
            if isinstance(self.keep, dict):
                if (
                    len(self.keep) != 1
                    or next(iter(self.keep)) not in ("max", "min")
                    or not isinstance(next(iter(self.keep.values())), str)
                ):
                    raise ValueError(f"keep by score must be {{max: column}} or {{min: column}}, got {self.keep!r}")
            elif self.keep not in ("hard", "easy", "random"):
                raise ValueError(f"keep must be hard, easy, random or {{max: column}}, got {self.keep!r}")
            check_device(self.device)
            check_seed(self.seed)
            check_text("embedding_column", self.embedding_column, "a column name")

    def __init__(self, **params):
        super().__init__(**params)
        cols = ["key", "source", self.params.embedding_column]
        if isinstance(self.params.keep, dict):
            cols.append(next(iter(self.params.keep.values())))
        self.requires = tuple(dict.fromkeys(cols))

    def n_clusters_for(self, n: int) -> int:
        k = self.params.n_clusters
        if k is None:
            k = min(MAX_DEFAULT_CLUSTERS, max(1, round(n / POINTS_PER_CLUSTER)))
        return max(1, min(int(k), n))

    def sizes_for(self, m: int) -> tuple[int, int]:
        """(clusters, k-means sample size) for m usable embeddings: sample_size (null: 256 per cluster) capped
        at m, n_clusters (or its default) capped at the sample."""
        if self.params.sample_size is None:  # faiss's own rule: at most 256 training points per centroid
            s = min(m, TRAIN_POINTS_PER_CLUSTER * self.n_clusters_for(m))
        else:
            s = min(int(self.params.sample_size), m)
        return min(self.n_clusters_for(m), s), s

    def keep_policy(self, column: pa.ChunkedArray | None = None):
        """The curate keep argument: the policy name, or (for keep by score) the signed float64 scores of
        ``column`` (higher kept first; null/NaN last)."""
        keep = self.params.keep
        if not isinstance(keep, dict):
            return keep
        direction, col = next(iter(keep.items()))
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            raise StageError(f"stage '{self.name}': keep column '{col}' must be numeric, got {column.type}")
        scores = np.asarray(column.to_numpy(zero_copy_only=False), np.float64)
        return scores if direction == "max" else -scores

    def run(self, table: pa.Table) -> GlobalResult:
        """In memory: k-means on ``sample_size`` rows (256 per cluster when null; the streaming version's id-hash sample
        otherwise, by the table's ``_sample_id`` when the executor passes it, else the row number), every row
        assigned to its nearest centroid in the streaming version's chunks, then curate.semantic_dedup on
        those clusters: the sharded run (run_sharded) gives the same result."""
        from mmcurate import index as mindex
        from mmcurate.curate import semantic_dedup
        from mmcurate.curate.semantic import pair_cosine64
        from mmcurate.curate.semantic_stream import assign_chunk, fit_centroids

        t0 = time.perf_counter()
        p = self.params
        x, ok, details = embedding_matrix(table.column(p.embedding_column), p.embedding_column, self.name)
        rejected = [no_embedding_rejects(table, ok, details, self.name)]
        rows = np.flatnonzero(ok)
        m = rows.size
        stats = {
            "no_embedding": int(table.num_rows - m),
            "eps": float(p.eps),
            "keep": p.keep if isinstance(p.keep, str) else dict(p.keep),
        }
        if m == 0:
            stats.update(clusters=0, duplicates=0, seconds=round(time.perf_counter() - t0, 4))
            return GlobalResult(rejected=_concat_rejects(rejected), stats=stats)
        keep = self.keep_policy(
            table.column(next(iter(p.keep.values()))).take(pa.array(rows)) if isinstance(p.keep, dict) else None
        )
        ids = (
            table.column(SAMPLE_ID).to_numpy().astype(np.int64)[rows]
            if SAMPLE_ID in table.column_names
            else rows.astype(np.int64)
        )
        k, s = self.sizes_for(m)
        dev = mindex.resolve_device(p.device)
        centroids = fit_centroids(_kmeans_sample(x, ids, s, p.seed), k, seed=p.seed, device=dev)
        labels = np.concatenate([assign_chunk(x[a:b], centroids, dev) for a, b in _assign_chunks(ids)])
        r = semantic_dedup(x, eps=float(p.eps), keep=keep, device=dev, seed=p.seed, clusters=(centroids, labels))
        rep = r.representative
        dup = np.flatnonzero(~r.keep)
        keys = table.column("key").take(pa.array(rows))
        dup_rows = rows[dup]
        cos = pair_cosine64(x[dup], x[rep[dup]])
        dup_rej, duplicates = semantic_duplicate_tables(
            self.name,
            table.column("key").take(pa.array(dup_rows)).to_pylist(),
            table.column("source").take(pa.array(dup_rows)).to_pylist(),
            keys.take(pa.array(rep[dup])).to_pylist() if dup.size else [],
            cos,
        )
        rejected.append(dup_rej)
        kept = np.flatnonzero(r.keep)
        columns = pa.table(
            {
                "key": keys.take(pa.array(kept)),
                "semantic_cluster": pa.array(r.cluster[kept].astype(np.int32), pa.int32()),
            }
        )
        sizes = np.bincount(r.cluster, minlength=r.centroids.shape[0])
        stats.update(
            clusters=int(r.centroids.shape[0]),
            sample_size=int(s),
            duplicates=int(dup.size),
            kept=int(kept.size),
            cluster_size_percentiles=cluster_size_percentiles(sizes),
            seconds=round(time.perf_counter() - t0, 4),
        )
        return GlobalResult(rejected=_concat_rejects(rejected), duplicates=duplicates, columns=columns, stats=stats)

    def run_sharded(self, ctx) -> GlobalResult:
        """Over the survivor shards without the embedding matrix: see stages.sharded_steps."""
        from mmcurate.stages.sharded_steps import semantic_dedup_sharded

        return semantic_dedup_sharded(self, ctx)


def semantic_duplicate_tables(stage: str, dup_keys: list, dup_sources: list, rep_keys: list, cos: np.ndarray):
    """(rejects, duplicates) for semantic duplicates and the cosine to their kept representative."""
    if not len(dup_keys):
        return REJECTS_SCHEMA.empty_table(), DUPLICATES_SCHEMA.empty_table()
    rejected = rejects_table(
        dup_keys,
        dup_sources,
        stage,
        "duplicate_semantic",
        [f"cosine {c_:.3f} to {k_}" for c_, k_ in zip(cos, rep_keys)],
    )
    duplicates = pa.table(
        {
            "key": pa.array(dup_keys, pa.string()),
            "duplicate_of": pa.array(rep_keys, pa.string()),
            "kind": pa.array(["semantic"] * len(dup_keys), pa.string()),
            "distance": pa.array(np.clip(1.0 - np.asarray(cos), 0.0, 2.0), pa.float64()),
        },
        schema=DUPLICATES_SCHEMA,
    )
    return rejected, duplicates


def _kmeans_sample(x: np.ndarray, ids: np.ndarray, s: int, seed: int) -> np.ndarray:
    """The rows k-means trains on, in id order: all of them, or the streaming version's id-hash sample."""
    from mmcurate.curate.semantic_stream import EmbeddingShard, draw_sample

    if s >= x.shape[0]:
        return x if np.all(ids[1:] > ids[:-1]) else x[np.argsort(ids, kind="stable")]
    return draw_sample([EmbeddingShard.from_array(x, ids)], s, seed)[1]


def _assign_chunks(ids: np.ndarray):
    """(start, stop) row ranges in which the streaming version assigns: per survivor shard (the shard part of
    the sample id), DEFAULT_CHUNK_ROWS rows at a time."""
    from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS

    shard = ids >> SHARD_SHIFT
    cuts = np.r_[0, np.flatnonzero(shard[1:] != shard[:-1]) + 1, ids.size]
    for a, b in zip(cuts[:-1], cuts[1:]):
        for c in range(int(a), int(b), DEFAULT_CHUNK_ROWS):
            yield c, min(c + DEFAULT_CHUNK_ROWS, int(b))


# ---------------------------------------------------------------------------------------------------------
# balance


def clip_levels(levels, n: int) -> list[int]:
    """Cluster counts per level, clipped so each cluster has >= MIN_POINTS_PER_BALANCE_CLUSTER inputs
    (level i's inputs are level i-1's centroids); levels that no longer shrink are dropped."""
    out: list[int] = []
    n_in = n
    for k in levels:
        k = max(1, min(int(k), n_in // MIN_POINTS_PER_BALANCE_CLUSTER))
        if out and (k >= out[-1] or k == 1):
            break
        out.append(k)
        n_in = k
    return out


@registry.register
class Balance(GlobalStage):
    name = "balance"
    uses_sample_ids = True  # the data level's k-means sample and assignment chunks follow the run's sample ids

    @dataclass
    class Params:
        target: int | None = None
        fraction: float | None = None
        levels: list = field(default_factory=lambda: [1000, 100])
        method: str = "hierarchical"
        strategy: str = "random"
        seed: int = 0
        device: str = "auto"
        embedding_column: str = DEFAULT_EMBEDDING_COLUMN
        sample_size: int | None = None  # rows the data level's k-means trains on; None: 256 per cluster

        def validate(self):
            from mmcurate.curate.balance import METHODS, STRATEGIES

            check_int("sample_size", self.sample_size, 1, optional="256 per cluster")
            if (self.target is None) == (self.fraction is None):
                raise ValueError("give exactly one of target (a sample count) or fraction (0 < f <= 1)")
            if self.target is not None:
                check_int("target", self.target, 0)
            if self.fraction is not None:
                check_number("fraction", self.fraction, 0, 1, lo_open=True)
            if (
                not isinstance(self.levels, (list, tuple))
                or not self.levels
                or not all(is_int(k) and k >= 1 for k in self.levels)
            ):
                raise ValueError(f"levels must be a non-empty list of positive cluster counts, got {self.levels!r}")
            check_choice("method", self.method, METHODS)
            check_choice("strategy", self.strategy, STRATEGIES)
            check_seed(self.seed)
            check_device(self.device)
            check_text("embedding_column", self.embedding_column, "a column name")

    def __init__(self, **params):
        super().__init__(**params)
        self.requires = tuple(dict.fromkeys(["key", "source", self.params.embedding_column]))

    def target_for(self, n: int) -> int:
        p = self.params
        return min(n, int(p.target) if p.target is not None else int(round(p.fraction * n)))

    def levels_for(self, m: int) -> list[int]:
        p = self.params
        return clip_levels(p.levels if p.method == "hierarchical" else p.levels[:1], m)

    def run(self, table: pa.Table) -> GlobalResult:
        """In memory: balanced_sample with the data level's k-means sample drawn by the table's ``_sample_id``
        (the row number without it) and assignment in the sharded form's chunks, so run_sharded gives the
        same result."""
        from mmcurate import index as mindex
        from mmcurate.curate.balance import balanced_sample

        t0 = time.perf_counter()
        p = self.params
        x, ok, details = embedding_matrix(table.column(p.embedding_column), p.embedding_column, self.name)
        rejected = [no_embedding_rejects(table, ok, details, self.name)]
        rows = np.flatnonzero(ok)
        m = rows.size
        target = self.target_for(m)
        stats = self.base_stats(table.num_rows - m, m)
        if m == 0:
            stats.update(selected=0, seconds=round(time.perf_counter() - t0, 4))
            return GlobalResult(rejected=_concat_rejects(rejected), stats=stats)
        ids = (
            table.column(SAMPLE_ID).to_numpy().astype(np.int64)[rows]
            if SAMPLE_ID in table.column_names
            else rows.astype(np.int64)
        )
        levels = self.levels_for(m)
        dev = mindex.resolve_device(p.device)
        picked, top, n_top = balanced_sample(
            x,
            target=target,
            levels=tuple(levels),
            device=dev,
            seed=p.seed,
            method=p.method,
            strategy=p.strategy,
            sample_size=p.sample_size,
            return_clusters=True,
            ids=ids,
            chunks=list(_assign_chunks(ids)),
        )
        del x
        top = np.asarray(top, np.int64)
        selected = np.zeros(m, bool)
        selected[picked] = True
        out = np.flatnonzero(~selected)
        if out.size:
            orow = rows[out]
            rejected.append(
                balance_rejects(
                    self.name,
                    table.column("key").take(pa.array(orow)).to_pylist(),
                    table.column("source").take(pa.array(orow)).to_pylist(),
                    top[out],
                )
            )
        keys = table.column("key").take(pa.array(rows[picked]))
        columns = pa.table({"key": keys, "balance_cluster": pa.array(top[picked].astype(np.int32), pa.int32())})
        stats.update(self.result_stats(picked, top, n_top, levels, m), seconds=round(time.perf_counter() - t0, 4))
        return GlobalResult(rejected=_concat_rejects(rejected), columns=columns, stats=stats)

    def base_stats(self, no_embedding: int, m: int) -> dict:
        p = self.params
        return {
            "no_embedding": int(no_embedding),
            "n": int(m),
            "target": int(self.target_for(m)),
            "method": p.method,
            "strategy": p.strategy,
        }

    def result_stats(self, picked: np.ndarray, top: np.ndarray, n_top: int, levels: list, m: int) -> dict:
        from mmcurate.curate.balance import cluster_balance_stats, data_sample_size

        return {
            "selected": int(picked.size),
            "levels": [int(k) for k in levels],
            "sample_size": data_sample_size(m, max(1, min(levels[0], m)), self.params.sample_size),
            "before": cluster_balance_stats(top, n_top),
            "after": cluster_balance_stats(top[picked], n_top),
        }

    def run_sharded(self, ctx) -> GlobalResult:
        """Over the survivor shards without the embedding matrix: see stages.sharded_steps."""
        from mmcurate.stages.sharded_steps import balance_sharded

        return balance_sharded(self, ctx)


def balance_rejects(stage: str, keys: list, sources: list, top: np.ndarray) -> pa.Table:
    """Rejects for the samples balance did not select, naming their top-level cluster."""
    return rejects_table(keys, sources, stage, "balance", [f"cluster {int(c)} over its share" for c in top])
