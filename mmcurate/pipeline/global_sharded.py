"""The sharded global context (``run: {global_mode: sharded}``): global steps without the whole dataset on one worker.

``pipeline.global_phase`` runs the global steps over a context; every step is one ``run(ctx)``. Memory mode's
context holds the columns every step needs, for all survivors, in one table, and runs tasks in process. This
one leaves them in the map phase's survivor shards (``_work/meta/NNNNN.parquet``), runs the steps' per-shard
and per-partition tasks through ``ctx.map_fn`` (builtin ``map``, a process pool's map for ``run.workers`` > 1,
Ray tasks under the Ray executor) and spills their partitions under ``_work/``. The outputs are byte for byte
those of memory mode.

Sample ids. A sample is named by ``SAMPLE_ID`` = (survivor shard index << 32) | its row in that shard's metadata
file: stable for the whole global phase and ascending in memory mode's row order, so a tie broken by row in
memory mode is broken the same way by id here.

State between steps, on disk and in the driver:
  * removed rows: per shard, the rows earlier global steps rejected (driver: 8 bytes per *rejected* sample);
  * added columns (e.g. ``semantic_cluster``, ``split``): written per shard under ``_work/global/columns/<step>/``
    as (row, columns); a later step's reader and the write phase join them by row, shard by shard;
  * the global rejects and duplicate links as tables (their size: duplicates and filtered samples only);
  * spill files of a step's tasks under ``_work/global/spill/<step>/`` (deleted after the step).
The driver never holds a column of all samples except where a stage says so: at most a few bytes per sample
(ids of linked or kept samples, cluster labels; see each step's run), never embeddings or all hashes.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.curate.hashing import GOLDEN, mix64
from mmcurate.curate.semantic_stream import EmbeddingShard, FileSpill, MemorySpill
from mmcurate.pipeline.stage import SAMPLE_ID, SHARD_SHIFT, AccountingError, StageError, id_rows, id_shards, make_ids

GLOBAL_DIR = "global"
ROW = "_row"  # row in the shard's metadata file, in added-column files
KEY_ROWS_PER_PARTITION = 1 << 22  # unique-key check: keys per partition task
# Pigeonhole join tasks are sized in entry bytes: 8.4M of the 17-byte entries of 64-bit codes (143 MB), so PDQ's
# 41-byte entries, and 8 per code chunk with dihedral variants, make more and smaller tasks, not bigger ones.
HAMMING_ENTRY_BYTES_PER_PARTITION = (1 << 23) * 17
MAX_PARTITIONS = 1 << 14
MAX_SHARD_ROWS = (1 << SHARD_SHIFT) - 1  # rows a survivor shard may have: the row part of a sample id


# ---------------------------------------------------------------------------------------------
# Sample ids and hashing
# ---------------------------------------------------------------------------------------------
_HASH_PIECE = 1 << 16


def string_hash64(values) -> np.ndarray:
    """A uint64 hash of every string (or binary) value, the same in every process and on every machine (for
    routing values to partitions; equal values, equal hashes). Vectorised over Arrow's buffers: each byte,
    weighted by a mix of its position, summed per value, then mixed with the length. Nulls hash as ""."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = arr.type
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        off_type = np.int64
    elif pa.types.is_string(t) or pa.types.is_binary(t):
        off_type = np.int32
    else:
        raise TypeError(f"string_hash64 needs string or binary values, got {t}")
    out = np.empty(len(arr), np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, len(arr), _HASH_PIECE):
            piece = arr.slice(s, _HASH_PIECE)
            n = len(piece)
            bufs = piece.buffers()
            item = np.dtype(off_type).itemsize
            off = np.frombuffer(bufs[1], off_type, count=n + 1, offset=piece.offset * item).astype(np.int64)
            data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
            data = data[off[0] : off[-1]]
            lengths = np.diff(off)
            pos = np.arange(data.size, dtype=np.uint64) - np.repeat((off[:-1] - off[0]).astype(np.uint64), lengths)
            contrib = (data.astype(np.uint64) + np.uint64(1)) * mix64(pos + np.uint64(GOLDEN))
            cs = np.concatenate([np.zeros(1, np.uint64), np.cumsum(contrib, dtype=np.uint64)])
            h = cs[off[1:] - off[0]] - cs[off[:-1] - off[0]]
            out[s : s + n] = mix64(h ^ mix64(lengths.astype(np.uint64) + np.uint64(0xD1B54A32D192ED03)))
    return out


# ---------------------------------------------------------------------------------------------
# Partition files (a shuffle through the filesystem)
# ---------------------------------------------------------------------------------------------
def partition_dir(root, p: int) -> Path:
    return Path(root) / f"p{int(p):05d}"


def write_partitions(table: pa.Table, part: np.ndarray, n_partitions: int, root, name: str) -> np.ndarray:
    """Write the rows of ``table`` going to partition ``part[i]`` to ``root/pNNNNN/<name>.parquet`` (rows in
    table order; only non-empty partitions get a file; atomic, so a retried task rewrites the same files).
    Returns the row count per partition."""
    from mmcurate.io import write_parquet_atomic

    part = np.asarray(part, np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n_partitions + 1))
    counts = np.diff(bounds)
    for p in np.flatnonzero(counts):
        write_parquet_atomic(
            table.take(pa.array(order[bounds[p] : bounds[p + 1]])), partition_dir(root, p) / f"{name}.parquet"
        )
    return counts


def read_partition(part_dir) -> pa.Table | None:
    """Every shard's rows of one partition, in shard-name order (None when empty)."""
    files = sorted(Path(part_dir).glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


class DiskPartitions:
    """A shuffle's partitions as files under ``root`` (picklable: tasks in other processes and on other nodes
    write and read them); sharded mode's partition store."""

    def __init__(self, root):
        self.root = str(root)

    def sub(self, name: str) -> DiskPartitions:
        """A second, independent shuffle of the same step."""
        return DiskPartitions(Path(self.root) / name)

    def write(self, table: pa.Table, part, n_partitions: int, name: str) -> np.ndarray:
        """Rows going to partition part[i] (None: all to partition 0 of 1); the row count per partition."""
        if part is None:
            part = np.zeros(table.num_rows, np.int64)
        return write_partitions(table, part, n_partitions, self.root, name)

    def read(self, p: int) -> pa.Table | None:
        return read_partition(partition_dir(self.root, p))

    def embeddings(self, name: str, x: np.ndarray, ids: np.ndarray) -> EmbeddingShard:
        """One shard's embedding rows kept for the step's later tasks: a float32 .npy file here (atomic, so a
        retried task rewrites it), read back by row ranges and by row, never whole."""
        path = Path(self.root) / "embeddings" / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(x, np.float32))
        os.replace(tmp, path)
        return EmbeddingShard.from_npy(path, ids)

    def row_spill(self) -> FileSpill:
        """Where semantic dedup's assignment pass spills the rows by cluster partition."""
        return FileSpill(Path(self.root) / "rows")


class MemoryPartitions:
    """The same partitions held in this process (memory mode: tasks run in process, nothing is spilled)."""

    def __init__(self):
        self._parts: dict[int, list] = {}
        self._subs: dict[str, MemoryPartitions] = {}

    def sub(self, name: str) -> MemoryPartitions:
        return self._subs.setdefault(name, MemoryPartitions())

    def write(self, table: pa.Table, part, n_partitions: int, name: str) -> np.ndarray:
        if n_partitions == 1:  # the one partition gets the table as it is
            counts = np.array([table.num_rows], np.int64)
            if table.num_rows:
                self._parts.setdefault(0, []).append((name, table))
            return counts
        part = np.asarray(part, np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(n_partitions + 1))
        counts = np.diff(bounds)
        for p in np.flatnonzero(counts):
            self._parts.setdefault(int(p), []).append((name, table.take(pa.array(order[bounds[p] : bounds[p + 1]]))))
        return counts

    def read(self, p: int) -> pa.Table | None:
        pieces = sorted(self._parts.get(int(p), []), key=lambda x: x[0])
        if not pieces:
            return None
        return pa.concat_tables([t for _, t in pieces], promote_options="permissive")

    def embeddings(self, name: str, x: np.ndarray, ids: np.ndarray) -> EmbeddingShard:
        return EmbeddingShard.from_array(x, ids, name=name)

    def row_spill(self) -> MemorySpill:
        return MemorySpill()


# ---------------------------------------------------------------------------------------------
# One survivor shard, as the tasks see it
# ---------------------------------------------------------------------------------------------
class ShardView:
    """A picklable handle on one survivor shard for tasks: its metadata file, the rows earlier global steps
    removed, the column files they added, and the run's column types. Holds no open files."""

    def __init__(self, index: int, path: str, n_rows: int, removed: np.ndarray, added: tuple, schema: pa.Schema):
        self.index, self.path, self.n_rows = int(index), str(path), int(n_rows)
        self.removed = np.asarray(removed, np.int64)  # sorted rows
        self.added = added  # ((file, column names), ...) in step order
        self.schema = schema

    @property
    def n_alive(self) -> int:
        return self.n_rows - int(self.removed.size)

    def alive_rows(self) -> np.ndarray:
        rows = np.arange(self.n_rows, dtype=np.int64)
        return rows[~np.isin(rows, self.removed, assume_unique=True)] if self.removed.size else rows

    def read(self, columns: Iterable[str]) -> pa.Table:
        """The shard's surviving rows (in row order): the columns asked for, in that order, then SAMPLE_ID.
        A column comes from the metadata file, else from the earliest step that added it (joined by row;
        null for rows it gave no value), else it is all null (another shard has it), as memory mode's
        concatenated and joined table has it."""
        names = [c for c in dict.fromkeys(columns) if c != SAMPLE_ID]
        have = set(pq.read_schema(self.path).names)
        from_meta = [c for c in names if c in have]
        rows = self.alive_rows()
        meta = pq.read_table(self.path, columns=from_meta) if from_meta else None
        if meta is not None and self.removed.size:
            meta = meta.take(pa.array(rows))
        cols = {}
        for c in names:
            if c in have:
                arr = meta.column(c)
            else:
                arr = self._added_column(c, rows)
            want = self.schema.field(c).type if c in self.schema.names else arr.type
            cols[c] = arr if arr.type == want else arr.cast(want)
        cols[SAMPLE_ID] = pa.array(make_ids(self.index, rows), pa.int64())
        return pa.table(cols)

    def _added_column(self, name: str, rows: np.ndarray):
        for path, cols in self.added:
            if name in cols:
                t = pq.read_table(path, columns=[ROW, name])
                idx = pc.index_in(pa.array(rows, pa.int64()), value_set=t.column(ROW).combine_chunks())
                return t.column(name).take(idx)
        if name in self.schema.names:
            return pa.nulls(rows.size, self.schema.field(name).type)
        raise StageError(f"no column {name!r} in survivor shard {self.index} or any global step's output")


# ---------------------------------------------------------------------------------------------
# Tasks (module level: they travel to worker processes and Ray workers by reference)
# ---------------------------------------------------------------------------------------------
def _call(fn):
    return fn()


def links_to_first(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Links (int64[n, 2]) joining every sample ``ids[i]`` to the first sample of its component ``labels[i]``:
    the same connected components with one link per sample."""
    _, first_pos, inverse = np.unique(labels, return_index=True, return_inverse=True)
    firsts = np.asarray(ids, np.int64)[first_pos][inverse.reshape(-1)]
    return np.stack([np.asarray(ids, np.int64), firsts], axis=1)


def _codes_by_component_task(task):
    """One shard's linked samples' codes (one uint64 column per word: 64- or 256-bit), routed by their component
    to partitions (every pair lies inside one)."""
    from mmcurate.ops.hamming import as_code_rows

    shard, linked, comp, n_part, store, i = task
    ids, codes = shard()
    pos = np.minimum(np.searchsorted(linked, ids), max(linked.size - 1, 0))
    on = linked[pos] == ids
    rows = as_code_rows(codes).reshape(len(ids), -1)[on]
    out = pa.table({f"w{k}": pa.array(rows[:, k], pa.uint64()) for k in range(rows.shape[1])})
    part = mix64(comp[pos[on]].astype(np.uint64) + np.uint64(GOLDEN)) % np.uint64(n_part)
    return store.write(out, part.astype(np.int64), n_part, f"s{i:06d}")


def _component_pairs_task(task):
    from mmcurate.curate.dedup import near_components

    store, q, radius = task
    t = store.read(q)
    rows = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names], axis=1).astype(np.uint64)
    return near_components(rows.reshape(-1) if rows.shape[1] == 1 else rows, radius, device="cpu")[1]


KEY_SAMPLE_PER_PARTITION = 256  # keys sampled per range partition, for the key sort's boundaries


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
    view, bounds, store = task
    t = view.read(["key"]).select(["key", SAMPLE_ID])
    keys = np.array(t.column("key").to_pylist(), dtype=object)
    part = (
        np.searchsorted(np.array(bounds, dtype=object), keys, side="right").astype(np.int64)
        if len(bounds)
        else np.zeros(len(keys), np.int64)
    )
    return store.write(t, part, len(bounds) + 1, f"s{view.index:05d}")


def _key_sort_task(task):
    """The ids of one range partition in key order (Arrow's sort)."""
    store, p = task
    t = store.read(p)
    return t.column(SAMPLE_ID).take(pc.sort_indices(t.column("key"))).to_numpy().astype(np.int64)


def _read_task(task) -> pa.Table:
    view, columns = task
    return view.read(columns)


def _fetch_task(task) -> pa.Table:
    view, columns, rows = task
    t = view.read(columns)
    alive = view.alive_rows()
    pos = np.searchsorted(alive, rows)
    if pos.size and (pos.max() >= alive.size or not np.array_equal(alive[pos], rows)):
        raise StageError(f"survivor shard {view.index}: asked for rows that are not (or no longer) there")
    return t.take(pa.array(pos))


def _key_partition_task(task) -> np.ndarray:
    view, n_partitions, root = task
    keys = view.read(["key"]).select(["key"])
    part = (string_hash64(keys.column("key")) % np.uint64(n_partitions)).astype(np.int64)
    return write_partitions(keys, part, n_partitions, root, f"s{view.index:05d}")


def _repeated_keys_task(part_dir) -> tuple[int, list]:
    t = read_partition(part_dir)
    if t is None:
        return 0, []
    counts = pc.value_counts(t.column("key"))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return len(repeated), repeated.field("values").to_pylist()[:5]


# ---------------------------------------------------------------------------------------------
# The context
# ---------------------------------------------------------------------------------------------
class ShardedGlobalContext:
    """The survivors as a global step's run(ctx) sees them when sharded.

    ``views()``: the survivor shards as :class:`ShardView` s (only those with samples left), each with
    ``read(columns)`` (surviving rows, earlier steps' columns joined, SAMPLE_ID added). ``map_fn(fn, tasks)``:
    the executor's map (results in task order). ``spill_dir(step)``: a fresh directory under _work/ visible to
    every task. ``fetch(ids, columns)``: the columns of a few samples by id. ``load(columns)``: all survivors'
    columns in one table. ``n_partitions(rows_per_partition)``: a partition count
    for a shuffle of all survivors. ``tasks_see_gpu``: whether tasks may use a GPU the driver sees.
    """

    sharded = True

    def __init__(self, work, n_shards: int, map_fn: Callable = map, parallelism: int = 1, tasks_see_gpu: bool = True):
        self.work = Path(work)
        self.root = self.work / GLOBAL_DIR
        shutil.rmtree(self.root, ignore_errors=True)  # a resumed run recomputes the global phase
        self.root.mkdir(parents=True)
        self.map_fn = map_fn
        self.parallelism = max(1, int(parallelism))
        self.tasks_see_gpu = bool(tasks_see_gpu)
        self._paths: dict[int, str] = {}
        self._n_rows: dict[int, int] = {}
        schemas = []
        for i in range(n_shards):
            f = self.work / "meta" / f"{i:05d}.parquet"
            if f.exists():
                md = pq.read_metadata(f)
                self._paths[i], self._n_rows[i] = str(f), int(md.num_rows)
                schemas.append(md.schema.to_arrow_schema())
                if md.num_rows > MAX_SHARD_ROWS:
                    raise StageError(f"survivor shard {f} has {md.num_rows} rows; sharded mode allows 2^32 - 1")
        self.schema = (
            pa.unify_schemas(schemas, promote_options="permissive")
            if schemas
            else pa.schema([("key", pa.string()), ("source", pa.string())])
        )
        self._removed = {i: np.zeros(0, np.int64) for i in self._paths}
        self._added: list[tuple[str, pa.Schema, dict]] = []  # (step, column fields, {shard: file})

    # -- what is there ------------------------------------------------------------------------------
    @property
    def n_alive(self) -> int:
        return sum(self._n_rows[i] - self._removed[i].size for i in self._paths)

    @property
    def column_names(self) -> list[str]:
        return self.schema.names

    def views(self) -> list[ShardView]:
        out = []
        for i, path in self._paths.items():
            if self._n_rows[i] - self._removed[i].size > 0:
                added = tuple((str(files[i]), tuple(schema.names)) for _, schema, files in self._added if i in files)
                out.append(ShardView(i, path, self._n_rows[i], self._removed[i], added, self.schema))
        return out

    def n_partitions(self, rows_per_partition: int) -> int:
        """Enough partitions for the workers, and for ~rows_per_partition survivors each."""
        need = math.ceil(self.n_alive / max(1, int(rows_per_partition)))
        return int(min(MAX_PARTITIONS, max(1, self.parallelism, need)))

    def spill_dir(self, step: str, use: str | None = None) -> Path:
        """A fresh directory under _work/ for the step's spill files (``use``: one of its own, so several
        primitives of one step never clear each other's files); removed when the step ends."""
        d = self.root / "spill" / step
        if use is not None:
            d = d / use
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def _all_linked(self, shards, max_distance: int):
        """The ids of every sample with a code (ascending) when ``max_distance`` links every pair (64-bit codes
        at 64 bits or more: no pigeonhole is possible there), else None."""
        if max_distance <= 63:
            return None
        from mmcurate.ops.hamming import as_code_rows

        parts = list(self.map_fn(_call, shards))
        if any(as_code_rows(c).ndim > 1 for _, c in parts):
            return None  # 256-bit codes: the pigeonhole join takes any radius below 256
        return np.sort(np.concatenate([i for i, _ in parts])) if parts else np.zeros(0, np.int64)

    def _join_partitions(self, max_distance: int, code_shape: tuple[int, int]) -> int:
        """Partitions of a pigeonhole join whose tasks hold ~HAMMING_ENTRY_BYTES_PER_PARTITION of entries: a code
        of ``code_shape`` = (64-bit words, codes per sample: 8 with dihedral variants) spills one entry per chunk
        (curate.hamming_partition.chunk_layout) and per variant."""
        from mmcurate.curate.hamming_partition import chunk_layout, entry_dtype

        words, variants = (int(v) for v in code_shape)
        per_sample = len(chunk_layout(max_distance, 64 * words)) * variants * entry_dtype(words, variants > 1).itemsize
        return self.n_partitions(max(1, HAMMING_ENTRY_BYTES_PER_PARTITION // per_sample))

    def near_candidates(self, step: str, shards, max_distance: int, code_shape: tuple[int, int] = (1, 1)):
        """Hamming search primitive: (ascending ids of the samples with a code within ``max_distance`` bits of
        another one, the number of codes, the partitioning's figures). ``shards``: picklable callables, each
        returning one shard's (ids, 64- or 256-bit codes); ``code_shape``: (64-bit words per code, codes per
        sample), which sizes the join's tasks. The pigeonhole join (curate.partitioned_linked_ids) in per-shard
        and per-partition tasks, never listing pairs (at 64 bits of 64-bit codes every pair is linked)."""
        from mmcurate.curate.hamming_partition import partitioned_linked_ids

        every = self._all_linked(shards, max_distance)
        if every is not None:
            return every, int(every.size), None
        n_part = self._join_partitions(max_distance, code_shape)
        found = partitioned_linked_ids(
            shards, max_distance, n_partitions=n_part, spill_dir=str(self.spill_dir(step, "near")), map_fn=self.map_fn
        )
        figures = {k: found.stats[k] for k in ("n_partitions", "entries", "max_entries_per_partition")}
        return found.ids, int(found.stats["n_codes"]), figures

    def near_links(self, step: str, shards, max_distance: int, code_shape: tuple[int, int] = (1, 1)):
        """Hamming search primitive for grouping: (links int64[m, 2] of sample ids with the connected components
        of all pairs within ``max_distance``, the number of those pairs). The pigeonhole join's links
        (curate.partitioned_linked_ids), then the pairs counted per component in per-partition tasks
        (dedup.near_components counts a group of copies and a dense cluster of near-copies in closed form); 64- or
        256-bit codes (at 64 bits of 64 every pair is linked); ``code_shape`` as for near_candidates."""
        from mmcurate.curate.dedup import connected_components
        from mmcurate.curate.hamming_partition import partitioned_linked_ids

        every = self._all_linked(shards, max_distance)
        if every is not None:
            return links_to_first(every, np.zeros(every.size, np.int64)), every.size * (every.size - 1) // 2
        n_part = self._join_partitions(max_distance, code_shape)
        spill = self.spill_dir(step, "links")
        found = partitioned_linked_ids(
            shards, max_distance, n_partitions=n_part, spill_dir=str(spill / "join"), map_fn=self.map_fn
        )
        if not found.ids.size:
            return found.links, 0
        comp = connected_components(found.ids.size, np.searchsorted(found.ids, found.links))
        store = DiskPartitions(spill / "count")
        from mmcurate.curate.hamming_partition import entry_dtype

        # one code per linked sample
        n_count = self.n_partitions(HAMMING_ENTRY_BYTES_PER_PARTITION // entry_dtype(int(code_shape[0])).itemsize)
        counts = np.zeros(n_count, np.int64)
        for c in self.map_fn(
            _codes_by_component_task, [(shard, found.ids, comp, n_count, store, i) for i, shard in enumerate(shards)]
        ):
            counts += c
        n_pairs = sum(self.map_fn(_component_pairs_task, [(store, q, max_distance) for q in np.flatnonzero(counts)]))
        return found.links, int(n_pairs)

    def key_ranks(self, step: str):
        """(the survivors' ids ascending, the rank of each one's key among all keys in Arrow's sort order): a
        distributed sort. Keys sampled per shard for range boundaries, range-partitioned per shard, sorted per
        partition; rank = the partition's offset + the rank within it. Only the boundary sample and int64 ids
        come back to the driver."""
        store = DiskPartitions(self.spill_dir(step, "keys"))
        n_part = self.n_partitions(KEY_ROWS_PER_PARTITION)
        views = self.views()
        total = max(1, self.n_alive)
        want = KEY_SAMPLE_PER_PARTITION * n_part
        sample = [
            k
            for ks in self.map_fn(_key_sample_task, [(v, math.ceil(want * v.n_alive / total)) for v in views])
            for k in ks
        ]
        sample = sorted(set(sample))
        bounds = [sample[int(len(sample) * (p + 1) / n_part)] for p in range(n_part - 1)] if len(sample) > 1 else []
        bounds = sorted(set(bounds))
        counts = np.zeros(len(bounds) + 1, np.int64)
        for c in self.map_fn(_key_range_task, [(v, bounds, store) for v in views]):
            counts += c
        sorted_ids = [np.zeros(0, np.int64)] * counts.size
        nonempty = np.flatnonzero(counts)
        for p, ids in zip(nonempty, self.map_fn(_key_sort_task, [(store, p) for p in nonempty])):
            sorted_ids[p] = ids
        by_rank = np.concatenate(sorted_ids)
        order = np.argsort(by_rank, kind="stable")
        return by_rank[order], order.astype(np.int64)

    def partitions(self, step: str) -> DiskPartitions:
        """A fresh partition store for one of the step's shuffles, under its spill directory."""
        return DiskPartitions(self.spill_dir(step, "partitions"))

    def drop_spill(self, step: str) -> None:
        shutil.rmtree(self.root / "spill" / step, ignore_errors=True)

    def close(self) -> None:
        """The phase is over: its spill files go; the added columns stay for the write phase."""
        shutil.rmtree(self.root / "spill", ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------------
    def load(self, columns: list[str]) -> pa.Table:
        """Every survivor's columns (and SAMPLE_ID) in one table, in shard and row order: memory mode's table."""
        parts = list(self.map_fn(_read_task, [(v, list(columns)) for v in self.views()]))
        if not parts:
            return pa.table(
                {c: pa.nulls(0, self.schema.field(c).type) for c in columns} | {SAMPLE_ID: pa.array([], pa.int64())}
            )
        return pa.concat_tables(parts, promote_options="permissive")

    def fetch(self, ids, columns: list[str]) -> pa.Table:
        """The columns (and SAMPLE_ID) of the samples ``ids`` (unique), one row per id in ascending id order.
        One task per shard holding any of them; the driver holds just these rows."""
        ids = np.unique(np.asarray(ids, np.int64))
        shard = id_shards(ids)
        views = {v.index: v for v in self.views()}
        tasks = []
        for s in np.unique(shard):
            if int(s) not in views:
                raise StageError(f"sample ids of shard {int(s)}, which has no survivors")
            tasks.append((views[int(s)], list(columns), id_rows(ids[shard == s])))
        parts = list(self.map_fn(_fetch_task, tasks))
        if not parts:
            return self.load(columns).slice(0, 0)
        return pa.concat_tables(parts, promote_options="permissive")

    def check_unique_keys(self) -> None:
        """Keys must be unique across shards (global steps name samples by key): keys shuffled by hash into
        partitions, counted per partition; the driver holds nothing per sample."""
        n_part = self.n_partitions(KEY_ROWS_PER_PARTITION)
        root = self.spill_dir("_keys")
        try:
            counts = np.zeros(n_part, np.int64)
            for c in self.map_fn(_key_partition_task, [(v, n_part, str(root)) for v in self.views()]):
                counts += c
            repeated, examples = 0, []
            for n, ex in self.map_fn(
                _repeated_keys_task, [str(partition_dir(root, p)) for p in np.flatnonzero(counts)]
            ):
                repeated += n
                examples += ex
        finally:
            self.drop_spill("_keys")
        if repeated:
            raise StageError(
                f"sample keys repeat across input shards (e.g. {examples[:5]}); keys must be unique "
                f"for dedup to name its representatives. Rename the samples or curate the shards "
                f"separately."
            )

    # -- a step's outcome ---------------------------------------------------------------------------
    def remove(self, ids) -> None:
        """Drop these samples from the survivors (they were rejected by the current step)."""
        ids = np.asarray(ids, np.int64)
        if np.unique(ids).size != ids.size:
            raise AccountingError("a global step rejected a sample twice")
        shard, rows = id_shards(ids), id_rows(ids)
        for s in np.unique(shard):
            s = int(s)
            r = rows[shard == s]
            if s not in self._paths or r.max() >= self._n_rows[s] or np.isin(r, self._removed[s]).any():
                raise AccountingError(f"a global step rejected samples of shard {s} that were not survivors")
            self._removed[s] = np.union1d(self._removed[s], r)

    def add_columns(self, step: str, columns: pa.Table) -> None:
        """Per-sample columns of a step (SAMPLE_ID + columns), written per shard for later steps and the
        write phase; the in-memory table is released by the caller."""
        from mmcurate.io import write_parquet_atomic

        ids = columns.column(SAMPLE_ID).to_numpy().astype(np.int64)
        values = columns.drop_columns([SAMPLE_ID])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        values = values.take(pa.array(order))
        shard = id_shards(ids)
        files = {}
        d = self.root / "columns" / step
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            t = pa.table({ROW: pa.array(id_rows(ids[sel]), pa.int64())})
            piece = values.take(pa.array(sel))
            for name in piece.column_names:
                t = t.append_column(name, piece.column(name))
            files[int(s)] = d / f"{int(s):05d}.parquet"
            write_parquet_atomic(t, files[int(s)])
        fields = [f for f in values.schema if f.name not in self.schema.names]
        self._added.append((step, pa.schema(fields), files))
        self.schema = pa.schema(list(self.schema) + fields)

    def added_columns(self) -> ShardedColumns:
        return ShardedColumns([(schema, files) for _, schema, files in self._added if len(schema)])


class ShardedColumns:
    """The global steps' added columns for the write phase: their schemas (for samples.parquet) and, per
    shard, a join by row onto that shard's surviving metadata rows."""

    def __init__(self, steps: list[tuple[pa.Schema, dict]]):
        self.steps = steps

    def schema_tables(self) -> list[pa.Table]:
        return [schema.empty_table() for schema, _ in self.steps]

    def join(self, shard_index: int, meta: pa.Table, rows: np.ndarray) -> pa.Table:
        """meta (the shard's surviving rows, which are rows ``rows`` of its file) with every added column not
        already there, in step order; null where a step gave the row no value."""
        for schema, files in self.steps:
            names = [n for n in schema.names if n not in meta.column_names]
            if not names:
                continue
            f = files.get(shard_index)
            if f is None:
                for n in names:
                    meta = meta.append_column(n, pa.nulls(meta.num_rows, schema.field(n).type))
                continue
            t = pq.read_table(f, columns=[ROW, *names])
            idx = pc.index_in(pa.array(rows, pa.int64()), value_set=t.column(ROW).combine_chunks())
            for n in names:
                meta = meta.append_column(n, t.column(n).take(idx))
        return meta


# ---------------------------------------------------------------------------------------------
# The local executor's map
# ---------------------------------------------------------------------------------------------
def _pool_init(threads: int | None):
    if threads:
        os.environ["MMCURATE_NUM_THREADS"] = str(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@contextmanager
def local_map(workers: int, threads: int | None = None):
    """builtin map (workers <= 1) or a spawned process pool's ordered map for the sharded global tasks."""
    if workers <= 1:
        yield map
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_pool_init, initargs=(threads,)
    ) as pool:
        yield lambda fn, tasks: pool.map(fn, list(tasks))
