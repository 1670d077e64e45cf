"""Phase 2, the global steps: one driver over a global context, whichever way the survivors are held.

A context (``MemoryGlobalContext`` here, ``global_sharded.ShardedGlobalContext`` for ``run: {global_mode:
sharded}``) holds the survivors of the map phase and what earlier global steps did to them: the samples they
removed and the columns they added. The driver runs the global steps in recipe order over it and keeps the
accounting; every result is keyed by the run-wide sample id (``SAMPLE_ID``) while the phase runs, and by
``key`` only in the outputs it returns. Both contexts give the write phase the added columns through the same
``join(shard, meta, rows)``, so nothing after this phase knows which mode ran.

Every step is written once, as ``run(ctx)`` (pipeline.stage.GlobalStage): memory mode is the same algorithm
over one partition in this process.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.pipeline.global_sharded import MemoryPartitions, ShardedGlobalContext, links_to_first
from mmcurate.pipeline.output_dir import log
from mmcurate.pipeline.schema import DUPLICATES_OUTPUT_SCHEMA, REJECTS_SCHEMA, conform_duplicates
from mmcurate.pipeline.stage import SAMPLE_ID, AccountingError, StageError, id_shards, make_ids, stats_dict


def new_stat() -> dict:
    return {"in": 0, "kept": 0, "rejected": 0, "seconds": 0.0, "reasons": Counter(), "reused": 0}


@dataclass
class GlobalPhaseResult:
    n_kept: int
    stats: dict  # per global step: in, kept, rejected, seconds, reasons, mode, stats
    rejects: pa.Table  # REJECTS_SCHEMA
    duplicates: pa.Table  # DUPLICATES_OUTPUT_SCHEMA, representatives resolved
    columns: object  # the added columns: schema_tables() and join(shard, meta, rows)

    def __iter__(self):  # n_kept, stats, rejects, duplicates, columns = result
        return iter((self.n_kept, self.stats, self.rejects, self.duplicates, self.columns))


def run_global_phase(ctx, plan, progress: bool = False) -> GlobalPhaseResult:
    """The global steps of ``plan`` in recipe order over the survivors ``ctx`` holds. progress: a log line
    (output_dir.log) as each step starts and ends."""
    if ctx.n_alive:
        ctx.check_unique_keys()
    global_stats, rejects, dups = {}, [], []
    n_steps = len(plan.global_steps)
    for step_no, stage in enumerate(plan.global_steps, 1):
        st = new_stat()
        n_in = ctx.n_alive
        if progress:
            log(f"global: {stage.name} ({step_no}/{n_steps}) started on {n_in:,} samples")
        st["in"] = n_in
        st["mode"] = "sharded" if ctx.sharded else "memory"
        t = time.perf_counter()
        if n_in:
            missing = [c for c in stage.requires if c not in ctx.column_names]
            if missing:
                raise StageError(
                    f"global stage {stage.name!r} needs column(s) {missing}, which no earlier stage produced"
                )
            res = stage.run(ctx)
            gone = res.rejected.column(SAMPLE_ID).to_numpy().astype(np.int64)
            rejected = res.rejected.drop_columns([SAMPLE_ID])
            columns = res.columns
            ctx.remove(gone)
            if rejected.num_rows:
                rejects.append(rejected.cast(REJECTS_SCHEMA))
                st["reasons"].update(rejected.column("reason").to_pylist())
            if res.duplicates.num_rows:
                dups.append(conform_duplicates(res.duplicates))
            if columns is not None and columns.num_rows:
                ctx.add_columns(stage.name, columns)
            st["stats"] = stats_dict(res.stats)
            st["rejected"] = rejected.num_rows
        ctx.drop_spill(stage.name)
        st["kept"] = n_in - st["rejected"]
        st["seconds"] = time.perf_counter() - t
        if st["kept"] != ctx.n_alive:
            raise AccountingError(
                f"global stage {stage.name}: {n_in} in, {st['rejected']} rejected, but {ctx.n_alive} survivors remain"
            )
        global_stats[stage.name] = st
        if progress:
            log(
                f"global: {stage.name} ({step_no}/{n_steps}) done in {st['seconds']:.1f}s: "
                f"{st['kept']:,} kept, {st['rejected']:,} rejected"
            )
    global_rejects = pa.concat_tables(rejects) if rejects else REJECTS_SCHEMA.empty_table()
    duplicates = (
        resolve_representatives(pa.concat_tables(dups), gone_keys=global_rejects.column("key"))
        if dups
        else DUPLICATES_OUTPUT_SCHEMA.empty_table()
    )
    ctx.close()
    return GlobalPhaseResult(ctx.n_alive, global_stats, global_rejects, duplicates, ctx.added_columns())


def run_memory_global_phase(work, plan, n_shards: int, progress: bool = False) -> GlobalPhaseResult:
    """Memory mode (a module-level function: the Ray executor runs it as one task)."""
    return run_global_phase(MemoryGlobalContext.for_plan(work, n_shards, plan), plan, progress=progress)


def run_sharded_global_phase(
    work, plan, n_shards: int, map_fn=map, parallelism: int = 1, tasks_see_gpu: bool = True, progress: bool = False
) -> GlobalPhaseResult:
    """Sharded mode: tasks through ``map_fn`` (builtin map, a process pool's or Ray tasks)."""
    ctx = ShardedGlobalContext(work, n_shards, map_fn=map_fn, parallelism=parallelism, tasks_see_gpu=tasks_see_gpu)
    return run_global_phase(ctx, plan, progress=progress)


def run_on_table(stage, table: pa.Table):
    """One global step over a table of survivors (notebooks, tests): its GlobalResult, samples named by the
    table's SAMPLE_ID (else its row numbers)."""
    return stage.run(MemoryGlobalContext.from_table(table))


def resolve_representatives(dups: pa.Table, gone_keys) -> pa.Table:
    """Point every duplicate at a kept sample: follow duplicate_of while the target was itself removed.
    representative_kept: the final target is not among ``gone_keys`` (the global rejects' keys; every target
    was a survivor when its step ran, so that is the same as being kept)."""
    gone = set(gone_keys.to_pylist())
    # only removed samples are followed: a kept template variant (kind template, templates: keep) names its
    # partner without standing for it
    link = {k: d for k, d in zip(dups.column("key").to_pylist(), dups.column("duplicate_of").to_pylist()) if k in gone}

    def final(k):
        seen = set()
        while k in link and k not in seen:
            seen.add(k)
            k = link[k]
        return k

    direct = dups.column("duplicate_of").to_pylist()
    resolved = pa.array([final(d) for d in direct], pa.string())
    return pa.table(
        {
            "key": dups.column("key"),
            "duplicate_of": resolved,
            "kind": dups.column("kind"),
            "distance": dups.column("distance"),
            "verify_distance": dups.column("verify_distance"),
            "transform": dups.column("transform"),
            "via": pa.array([d if d != r else None for d, r in zip(direct, resolved.to_pylist())], pa.string()),
            "representative_kept": pc.invert(pc.is_in(resolved, value_set=gone_keys)),
        },
        schema=DUPLICATES_OUTPUT_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# Memory mode's context
# ---------------------------------------------------------------------------------------------
class MemoryGlobalContext:
    """Every survivor's columns that some global step needs, in one table in shard and row order with their
    sample ids; a step's removals filter it and its added columns are joined onto it (later steps may read
    them, e.g. split stratified by semantic_cluster). Nothing is written to disk."""

    sharded = False

    def __init__(self, table: pa.Table):
        """``table``: the survivors' columns with their SAMPLE_ID, in ascending id order."""
        self.table = table
        self._added: list[pa.Table] = []
        # what the steps' tasks get: in-process map, one partition
        self.map_fn = map
        self.parallelism = 1
        self.tasks_see_gpu = True

    @classmethod
    def from_work(cls, work, n_shards: int, columns) -> MemoryGlobalContext:
        """The map phase's survivor shards (_work/meta/NNNNN.parquet), the given columns of each."""
        needed = list(dict.fromkeys(["key", "source", *columns]))
        parts = []
        for i in range(n_shards):
            f = Path(work) / "meta" / f"{i:05d}.parquet"
            if f.exists():
                have = set(pq.read_schema(f).names)
                part = pq.read_table(f, columns=[c for c in needed if c in have])
                parts.append(part.append_column(SAMPLE_ID, pa.array(make_ids(i, np.arange(part.num_rows)))))
        if not parts:
            empty = {"key": pa.array([], pa.string()), "source": pa.array([], pa.string())}
            return cls(pa.table({**empty, SAMPLE_ID: pa.array([], pa.int64())}))
        return cls(pa.concat_tables(parts, promote_options="permissive"))

    @classmethod
    def from_table(cls, table: pa.Table) -> MemoryGlobalContext:
        """A context over one table of survivors (tests, notebooks): sample ids are the row numbers unless the
        table has them (then its rows are put in id order, which views and fetch rely on)."""
        if SAMPLE_ID not in table.column_names:
            return cls(table.append_column(SAMPLE_ID, pa.array(np.arange(table.num_rows, dtype=np.int64))))
        ids = table.column(SAMPLE_ID).to_numpy()
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            if np.unique(ids).size != ids.size:
                raise StageError(f"{SAMPLE_ID} values repeat")
            table = table.take(pa.array(np.argsort(ids, kind="stable")))
        return cls(table)

    @classmethod
    def for_plan(cls, work, n_shards: int, plan) -> MemoryGlobalContext:
        return cls.from_work(
            work, n_shards, [c for st in plan.global_steps for c in (*st.requires, *st.reads_if_present)]
        )

    @property
    def n_alive(self) -> int:
        return self.table.num_rows

    @property
    def column_names(self) -> list[str]:
        return [c for c in self.table.column_names if c != SAMPLE_ID]

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def check_unique_keys(self) -> None:
        keys = self.table.column("key")
        if pc.count_distinct(keys).as_py() != len(keys):
            counts = pc.value_counts(keys)
            repeated = [v["values"] for v in counts.to_pylist() if v["counts"] > 1][:5]
            raise StageError(
                f"sample keys repeat across input shards (e.g. {repeated}); keys must be unique for "
                f"dedup to name its representatives. Rename the samples or curate the shards "
                f"separately."
            )

    def load(self, columns) -> pa.Table:
        return self.table.select([*dict.fromkeys(c for c in columns if c != SAMPLE_ID), SAMPLE_ID])

    def views(self) -> list[TableShardView]:
        """The survivors per survivor shard (ids ascend, so each shard is one slice of the table)."""
        if not self.table.num_rows:
            return []
        shard = id_shards(self.table.column(SAMPLE_ID).to_numpy())
        bounds = np.flatnonzero(np.diff(shard)) + 1
        starts = np.concatenate([[0], bounds]).astype(int)
        ends = np.concatenate([bounds, [shard.size]]).astype(int)
        return [TableShardView(int(shard[a]), self.table.slice(a, b - a)) for a, b in zip(starts, ends)]

    def fetch(self, ids, columns) -> pa.Table:
        """The columns (and SAMPLE_ID) of the samples ``ids``, one row per id in ascending id order."""
        ids = np.asarray(ids, np.int64)
        if ids.size > 1 and not (ids[1:] > ids[:-1]).all():
            ids = np.unique(ids)
        have = self.table.column(SAMPLE_ID).to_numpy()
        if ids.size == have.size and np.array_equal(ids, have):  # every survivor (memory mode's candidates)
            return self.load(columns)
        pos = np.searchsorted(have, ids)
        if pos.size and (pos.max() >= have.size or not np.array_equal(have[pos], ids)):
            raise StageError("asked for samples that are not (or no longer) survivors")
        return self.load(columns).take(pa.array(pos))

    def n_partitions(self, rows_per_partition: int) -> int:
        """One partition: every sample meets every other in one task."""
        return 1

    def near_candidates(self, step: str, shards, max_distance: int, code_shape: tuple[int, int] = (1, 1)):
        """Hamming search primitive: every sample with a code is a candidate (a superset of the linked ones is
        all the grouping needs, and on one node it finds the pairs itself, once): (ascending ids, the number of
        codes, None: no partitioning). ``code_shape`` sizes the sharded context's join tasks; unused here."""
        parts = [shard() for shard in shards]
        ids = np.concatenate([i for i, _ in parts]) if parts else np.zeros(0, np.int64)
        return ids, int(ids.size), None

    def near_links(self, step: str, shards, max_distance: int, code_shape: tuple[int, int] = (1, 1)):
        """Hamming search primitive for grouping: (links int64[m, 2] of sample ids with the connected components
        of all pairs within ``max_distance``, the number of those pairs), computed once over all codes (64- or
        256-bit) on the distinct codes (dedup.near_components), never listing a group's pairs. ``code_shape``:
        unused here (near_candidates)."""
        from mmcurate.curate.dedup import near_components

        parts = [shard() for shard in shards]
        ids = np.concatenate([i for i, _ in parts]) if parts else np.zeros(0, np.int64)
        if not ids.size:
            return np.zeros((0, 2), np.int64), 0
        labels, n_pairs = near_components(np.concatenate([c for _, c in parts]), max_distance)
        return links_to_first(ids, labels), int(n_pairs)

    def key_ranks(self, step: str):
        """(the survivors' ids ascending, the rank of each one's key among all keys in Arrow's sort order): one
        sort."""
        ids = self.table.column(SAMPLE_ID).to_numpy()
        rank = np.empty(ids.size, np.int64)
        rank[np.asarray(pc.sort_indices(self.table.column("key")))] = np.arange(ids.size)
        return ids, rank

    def partitions(self, step: str) -> MemoryPartitions:
        """A partition store in this process (tasks run here): memory mode spills nothing."""
        return MemoryPartitions()

    def remove(self, ids) -> None:
        ids = np.asarray(ids, np.int64)
        if not ids.size:
            return
        if np.unique(ids).size != ids.size:
            raise AccountingError("a global step rejected a sample twice")
        gone = pc.is_in(self.table.column(SAMPLE_ID), value_set=pa.array(ids, pa.int64()))
        if pc.sum(gone).as_py() != ids.size:
            raise AccountingError("a global step rejected samples that were not survivors")
        self.table = self.table.filter(pc.invert(gone))

    def add_columns(self, step: str, columns: pa.Table) -> None:
        self._added.append(columns)
        self.table = _join_by_id(self.table, self.table.column(SAMPLE_ID), columns)

    def drop_spill(self, step: str) -> None:
        """Nothing spilled."""

    def close(self) -> None:
        """Nothing to clean up."""

    def added_columns(self) -> MemoryColumns:
        return MemoryColumns(self._added)


class TableShardView:
    """One survivor shard's rows in memory, as a task sees a shard: ``index`` and ``read(columns)``."""

    def __init__(self, index: int, table: pa.Table):
        self.index, self.table = index, table

    @property
    def n_alive(self) -> int:
        return self.table.num_rows

    def read(self, columns) -> pa.Table:
        """The columns asked for, in that order, then SAMPLE_ID."""
        return self.table.select([*dict.fromkeys(c for c in columns if c != SAMPLE_ID), SAMPLE_ID])


class MemoryColumns:
    """The global steps' added columns (SAMPLE_ID + columns, per step) for the write phase."""

    def __init__(self, steps: list[pa.Table]):
        self.steps = steps

    def schema_tables(self) -> list[pa.Table]:
        return [t.drop_columns([SAMPLE_ID]).schema.empty_table() for t in self.steps]

    def join(self, shard_index: int, meta: pa.Table, rows: np.ndarray) -> pa.Table:
        """meta (rows ``rows`` of the shard's metadata file) with every added column not already there, in step
        order; null where a step gave the row no value."""
        ids = pa.array(make_ids(shard_index, rows), pa.int64())
        for t in self.steps:
            meta = _join_by_id(meta, ids, t)
        return meta


def _join_by_id(table: pa.Table, ids, columns: pa.Table) -> pa.Table:
    """``table`` (whose rows have sample ids ``ids``) with each column of ``columns`` (SAMPLE_ID + columns)
    it lacks, by id, in row order: a lookup (index_in + take), since Arrow joins reorder rows and cannot
    carry list columns."""
    idx = pc.index_in(ids, value_set=columns.column(SAMPLE_ID))
    for name in columns.column_names:
        if name != SAMPLE_ID and name not in table.column_names:
            table = table.append_column(name, columns.column(name).take(idx))
    return table
