"""Semantic global steps over image embeddings: semantic_dedup (SemDeDup), balance (semantic-balance sampling).

Both read an embedding column (``embedding_column``, default ``image_embedding`` as written by
``clip_embed``): a fixed_size_list or list of float16/float32 per sample, shard by shard
(``stages.embeddings.step_embeddings``: unit float32 rows kept in the context's partition store, in RAM in
memory mode and as .npy files under ``_work/`` when sharded). A null, wrong-length, non-finite or zero-norm
embedding is a per-sample reject with reason ``no_embedding``; a column of the wrong type is a StageError.
One algorithm for both modes: the context decides where rows live and what runs the tasks; the results do not
depend on it (the k-means sample is drawn by id hash, assignment runs per shard in fixed chunks).

semantic_dedup
    ``mmcurate.curate.semantic_dedup_streaming`` (SemDeDup: spherical k-means, then within each cluster every
    sample with cosine >= 1 - eps to a more keepable member is a duplicate). k-means trains on ``sample_size``
    samples (null: 256 per cluster, faiss's own cap, or all when there are fewer; at most 50,000 clusters x
    256 x d x 4 bytes by default), drawn by the id-hash rule; every sample then goes to its nearest centroid,
    and the pairwise pass runs per partition of clusters as tasks. Duplicates are rejected
    (``duplicate_semantic``, detail ``cosine 0.973 to <key>``) and listed in duplicates.parquet (kind
    ``semantic``, distance 1 - cosine) pointing at their *kept* representative (the witness chain followed
    to the sample this stage keeps). Adds ``semantic_cluster`` (int32).
balance
    ``mmcurate.curate.balanced_sample_from`` (hierarchical k-means with resampling, balanced sampling down
    the hierarchy, or a flat per-cluster cap) to ``target`` samples or ``fraction`` of them. The data level's
    k-means trains on ``sample_size`` samples (null: 256 per cluster, or all when fewer) drawn by the id-hash
    rule, every sample is assigned per shard, and its resampling refits gather at most ``sample_size`` rows.
    Samples not selected are rejected (``balance``, detail naming their top-level cluster). Adds
    ``balance_cluster`` (the top-level cluster id). Stats: ``cluster_balance_stats`` (Gini, entropy, size
    percentiles, and the per-cluster ``sizes`` up to 4096 clusters, which the report draws) of the top-level
    cluster sizes before and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmcurate.curate.percentiles import percentile_summary
from mmcurate.index.faiss_index import TRAIN_POINTS_PER_CENTROID
from mmcurate.pipeline.params import check_choice, check_device, check_int, check_number, check_seed, check_text, is_int
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA, rejects_table
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    StageError,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.stages.embeddings import DEFAULT_EMBEDDING_COLUMN, step_embeddings, task_device

POINTS_PER_CLUSTER = 1000  # semantic_dedup's default cluster size: n_clusters = round(n / 1000)
MAX_DEFAULT_CLUSTERS = 50_000  # cap on that default (an explicit n_clusters is only capped at n)
MIN_POINTS_PER_BALANCE_CLUSTER = 4  # balance levels are clipped so a cluster has at least this many inputs
#: Percentiles of the cluster sizes in semantic_dedup's stats (with the mean).
CLUSTER_SIZE_PERCENTILES = (0, 50, 90, 99, 100)


# ---------------------------------------------------------------------------------------------------------
# helpers


def cluster_size_percentiles(sizes: np.ndarray) -> dict:
    """semantic_dedup's stats: percentiles of the cluster sizes."""
    return percentile_summary(sizes, CLUSTER_SIZE_PERCENTILES)


# ---------------------------------------------------------------------------------------------------------
# semantic_dedup


@dataclass
class SemanticDedupStats(StepStats):
    no_embedding: int | None = None  # samples without a usable embedding (rejected)
    eps: float | None = None
    keep: str | dict | None = None  # the keep policy
    clusters: int | None = None
    sample_size: int | None = None  # rows k-means trained on
    duplicates: int | None = None
    kept: int | None = None
    cluster_size_percentiles: dict | None = None  # p0, p50, p90, p99, p100, mean of the cluster sizes
    partitions: dict | None = None  # the pairwise pass: partitions, largest task, spilled bytes, pass times


@registry.register
class SemanticDedup(GlobalStage):
    """Semantic near-duplicates (SemDeDup): k-means on the image embeddings, then within each cluster a sample
    within cosine 1 - eps of a more keepable member is rejected (module docstring)."""

    name = "semantic_dedup"

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
            s = min(m, TRAIN_POINTS_PER_CENTROID * self.n_clusters_for(m))
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

    def run(self, ctx) -> GlobalResult:
        """The survivors' usable embeddings per shard (stages.embeddings.step_embeddings) into the context's
        partition store, then curate.semantic_dedup_streaming over them: k-means on the id-hash sample,
        assignment per shard, the pairwise pass per cluster partition (each duplicate's representative and
        cosine found where its cluster's rows are at hand), pass 2's rows spilled into the store's row spill
        (RAM in memory mode, _work/ when sharded). Keys fetched for the duplicates only."""
        from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS, semantic_dedup_streaming

        t0 = time.perf_counter()
        p = self.params
        store = ctx.partitions(self.name)
        score_col = next(iter(p.keep.values())) if isinstance(p.keep, dict) else None
        emb = step_embeddings(ctx, store, self.name, p.embedding_column, score_col)
        stats = SemanticDedupStats(
            no_embedding=int(emb.no_embedding.num_rows),
            eps=float(p.eps),
            keep=p.keep if isinstance(p.keep, str) else dict(p.keep),
            clusters=0,
            duplicates=0,
        )
        if emb.n == 0:
            stats.seconds = round(time.perf_counter() - t0, 4)
            return GlobalResult(rejected=emb.no_embedding, stats=stats)
        keep = (emb.ids, self.keep_policy(emb.scores)) if score_col else p.keep
        k, s = self.sizes_for(emb.n)
        r = semantic_dedup_streaming(
            emb.shards,
            eps=float(p.eps),
            n_clusters=k,
            keep=keep,
            sample_size=s,
            seed=p.seed,
            device=task_device(ctx, p.device),
            spill=store.row_spill(),
            map_fn=ctx.map_fn,
            chunk_rows=DEFAULT_CHUNK_ROWS,
            representatives=True,
        )
        no_embedding = emb.no_embedding
        del keep, emb
        dup_ids, rep_ids, cos = r.representatives
        dup_keys, dup_sources, rep_keys = [], [], []
        if dup_ids.size:
            info = ctx.fetch(np.union1d(dup_ids, rep_ids), ["key", "source"])
            fid = info.column(SAMPLE_ID).to_numpy()
            at_d, at_r = pa.array(np.searchsorted(fid, dup_ids)), pa.array(np.searchsorted(fid, rep_ids))
            dup_keys = info.column("key").take(at_d).to_pylist()
            dup_sources = info.column("source").take(at_d).to_pylist()
            rep_keys = info.column("key").take(at_r).to_pylist()
        dup_rej, duplicates = semantic_duplicate_tables(self.name, dup_keys, dup_sources, rep_keys, cos)
        columns = pa.table(
            {
                "semantic_cluster": pa.array(r.cluster[r.keep].astype(np.int32), pa.int32()),
                SAMPLE_ID: pa.array(r.ids[r.keep], pa.int64()),
            }
        )
        sizes = np.bincount(r.cluster, minlength=r.centroids.shape[0])
        stats.clusters = int(r.centroids.shape[0])
        stats.sample_size = int(s)
        stats.duplicates = int(dup_ids.size)
        stats.kept = int(np.count_nonzero(r.keep))
        stats.cluster_size_percentiles = cluster_size_percentiles(sizes)
        stats.partitions = {
            k_: r.stats[k_]
            for k_ in ("n_partitions", "peak_task_rows", "largest_cluster_rows", "spill_bytes", "seconds")
        }
        stats.seconds = round(time.perf_counter() - t0, 4)
        rejected = pa.concat_tables([no_embedding, with_sample_ids(dup_rej, dup_ids)])
        return GlobalResult(rejected=rejected, duplicates=duplicates, columns=columns, stats=stats)


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
            "verify_distance": pa.nulls(len(dup_keys), pa.float64()),
            "transform": pa.nulls(len(dup_keys), pa.string()),
        },
        schema=DUPLICATES_SCHEMA,
    )
    return rejected, duplicates


# ---------------------------------------------------------------------------------------------------------
# balance


@dataclass
class BalanceStats(StepStats):
    no_embedding: int | None = None  # samples without a usable embedding (rejected)
    n: int | None = None  # samples balanced (with an embedding)
    target: int | None = None
    method: str | None = None
    strategy: str | None = None
    selected: int | None = None
    levels: list | None = None  # clusters per level, after clipping
    sample_size: int | None = None  # rows the data level's k-means trained on
    before: dict | None = None  # curate.balance.cluster_balance_stats of the top-level clusters
    after: dict | None = None
    partitions: dict | None = None  # shards, the most rows one gather held


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
    """Semantic-balance sampling: hierarchical k-means over the image embeddings, then a target number of samples
    drawn evenly across clusters (module docstring)."""

    name = "balance"

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

    def run(self, ctx) -> GlobalResult:
        """The survivors' usable embeddings per shard (stages.embeddings.step_embeddings) into the context's
        partition store, then curate.balanced_sample_from over them (curate.balance.ShardEmbeddings): k-means
        on the id-hash sample gathered from the shards, assignment and resampling steps as per-shard tasks
        returning (label, distance), upper levels on the centroids, selection on the per-sample labels. Keys
        fetched for the rejected samples only."""
        from mmcurate.curate.balance import ShardEmbeddings, balanced_sample_from
        from mmcurate.curate.semantic_stream import DEFAULT_CHUNK_ROWS

        t0 = time.perf_counter()
        p = self.params
        emb = step_embeddings(ctx, ctx.partitions(self.name), self.name, p.embedding_column)
        m = emb.n
        stats = BalanceStats(
            no_embedding=int(emb.no_embedding.num_rows),
            n=int(m),
            target=int(self.target_for(m)),
            method=p.method,
            strategy=p.strategy,
            selected=0,
        )
        if m == 0:
            stats.seconds = round(time.perf_counter() - t0, 4)
            return GlobalResult(rejected=emb.no_embedding, stats=stats)
        source = ShardEmbeddings(emb.shards, emb.ids, ctx.map_fn, DEFAULT_CHUNK_ROWS)
        levels = self.levels_for(m)
        picked, top, n_top = balanced_sample_from(
            source,
            self.target_for(m),
            tuple(levels),
            task_device(ctx, p.device),
            p.seed,
            p.method,
            p.strategy,
            sample_size=p.sample_size,
        )
        selected = np.zeros(m, bool)
        selected[picked] = True
        out = np.flatnonzero(~selected)
        rejected = [emb.no_embedding]
        if out.size:
            info = ctx.fetch(emb.ids[out], ["key", "source"])  # ascending ids: out's order
            names = info.column("key").to_pylist(), info.column("source").to_pylist()
            rejected.append(with_sample_ids(balance_rejects(self.name, *names, top[out]), emb.ids[out]))
            del info, names
        columns = pa.table(
            {
                "balance_cluster": pa.array(top[picked].astype(np.int32), pa.int32()),
                SAMPLE_ID: pa.array(emb.ids[picked], pa.int64()),
            }
        )
        from mmcurate.curate.balance import cluster_balance_stats, data_sample_size

        stats.selected = int(picked.size)
        stats.levels = [int(k) for k in levels]
        stats.sample_size = data_sample_size(m, max(1, min(levels[0], m)), p.sample_size)
        stats.before = cluster_balance_stats(top, n_top)
        stats.after = cluster_balance_stats(top[picked], n_top)
        stats.partitions = {"shards": len(emb.shards), "largest_gather_rows": int(source.gathered_rows)}
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=pa.concat_tables(rejected), columns=columns, stats=stats)


def balance_rejects(stage: str, keys: list, sources: list, top: np.ndarray) -> pa.Table:
    """Rejects for the samples balance did not select, naming their top-level cluster."""
    return rejects_table(keys, sources, stage, "balance", [f"cluster {int(c)} over its share" for c in top])
