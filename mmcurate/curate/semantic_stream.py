"""Semantic dedup (SemDeDup) over embeddings that do not fit in memory, read from shards.

The rule is exactly :mod:`mmcurate.curate.semantic`'s (read its docstring: keep policies, ``max_similarity``
against earlier-ranked cluster members, the ``duplicate_of`` witness), with one change: wherever
``semantic_dedup`` breaks ties by the array index, this module uses the global sample id. Given the same
centroids and labels the two return identical arrays when the ids are 0..n-1 in row order (tested).

Three passes, each over shards, none holding the embedding matrix:

1. **Sample and cluster.** The ``sample_size`` ids with the smallest seeded 64-bit hash (splitmix64, a
   bijection, so there are no ties) form a uniform sample that depends only on the set of ids and the seed,
   not on how rows are split into shards or chunks or in which order the shards come. Their rows are
   gathered (in id order) and clustered with spherical k-means (:func:`mmcurate.index.kmeans`, faiss, GPU
   when present) into unit centroids.
2. **Assign and spill.** Every shard is streamed ``chunk_rows`` at a time; each row goes to its nearest
   centroid (:func:`mmcurate.index.assign`) and is appended, with its id and sort key, to the files of
   partition ``cluster % n_partitions``. Files are written per (shard, partition), so shards are
   independent tasks run through ``map_fn``. The sort key is the cosine to the centroid in float64 row by
   row (as ``keep_order`` computes it) for ``"hard"``, its negation for ``"easy"``, and for ``"random"``
   and scores the same key ``keep_order`` uses (the permutation is ``default_rng(seed).permutation(n)``
   indexed by the rank of the id among all ids).
3. **Pairwise per partition.** Each partition is an independent task through ``map_fn``: it loads the
   partition's (id, key, cluster) records, sorts them by (cluster, key, id) into keep order, and for one
   cluster at a time reads that cluster's embedding rows (coalesced reads, no mmap) and runs
   :func:`~mmcurate.curate.semantic.block_max_similarity` (torch on CUDA when the device is a GPU).

``map_fn`` is anything with the builtin ``map``'s signature: a ``ProcessPoolExecutor``'s ``map`` or a Ray
wrapper. Task functions and shards are picklable; a :class:`FileSpill`'s directory must be visible to every
worker (a :class:`MemorySpill` holds pass 2's rows in this process instead, for builtin ``map``).

Memory.
    Driver: the sample (``sample_size * d * 4`` bytes) and centroids during pass 1, then per-sample arrays
    only, never the embedding matrix: ids (8 B), and the result (keep 1 B, duplicate_of 8 B, cluster 4 B,
    max_similarity 4 B), i.e. 25 bytes per sample resident, plus transients of about 16 bytes per sample
    (sorting the ids; for ``"random"`` the permutation and id ranks; for scores the scores by id).
    Pass-2 task: one chunk (``chunk_rows * d`` floats, plus a 4096-row float64 copy for the cosines).
    Pass-3 task: 20 bytes per row of its partition (id, key, cluster) plus about 40 bytes per row for the
    sort and its outputs, and the embeddings of one cluster at a time plus one ``block x block`` tile.
    ``stats["peak_task_rows"]`` reports the most embedding rows any task held at once.
Disk (a :class:`FileSpill`; a :class:`MemorySpill` holds the same in RAM): the spill is every row once
(``4 * d + 20`` bytes per sample) in ``2 * shards * partitions`` files at most; it is deleted when the call
returns.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmcurate.curate.hashing import GOLDEN, mix64
from mmcurate.curate.percentiles import percentile_summary
from mmcurate.curate.semantic import (
    DEFAULT_BLOCK,
    KEEP_POLICIES,
    NORM_TOL,
    ThresholdedSimilarity,
    block_max_similarity,
    block_max_similarity_torch,
    check_eps,
    pair_cosine64,
    torch_cuda_ok,
)
from mmcurate.index.faiss_index import TRAIN_POINTS_PER_CENTROID

DEFAULT_CHUNK_ROWS = 16384  # rows per pass-2 read (64 MiB at d=1024)
DEFAULT_PARTITION_ROWS = 1 << 22  # default n_partitions keeps partitions near this many rows ...
MIN_DEFAULT_PARTITIONS = 16  # ... but makes at least this many tasks (capped at n_clusters)
_COS_ROWS = 4096  # float64 rows per cosine sub-chunk (bounds the float64 copy)
_MAX_OPEN_FILES = 128
_TAKE_ROWS = 16384  # sampled rows gathered per take() call
META_DTYPE = np.dtype([("id", "<i8"), ("key", "<f8"), ("cluster", "<i4")])  # 20 bytes, packed


# ------------------------------------------------------------------------------------------ shards


class EmbeddingShard:
    """``count`` rows of ``dim``-dimensional embeddings with global sample ids.

    Subclasses implement :meth:`ids` and :meth:`read`; :meth:`chunks` and :meth:`take` build on them.
    Shards hold paths and small arrays, never open files, so they pickle to worker processes. Rows are
    returned as float32 exactly as stored (float16 is widened, not re-normalised)."""

    count: int
    dim: int
    name: str

    def ids(self) -> np.ndarray:
        """int64[count]: the global sample id of every row."""
        raise NotImplementedError

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [stop - start, dim]: rows start..stop."""
        raise NotImplementedError

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) at most ``chunk_rows`` at a time, in row order."""
        for s in range(0, self.count, int(chunk_rows)):
            yield s, self.read(s, min(s + int(chunk_rows), self.count))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] for ascending row numbers ``rows``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, count={self.count}, dim={self.dim})"

    # constructors -------------------------------------------------------------------------------

    @staticmethod
    def from_array(x, ids=None, id_offset: int = 0, name: str = "array") -> EmbeddingShard:
        """An in-memory (or memmap) float array [n, d]. ``ids``: int[n], or None for id_offset + 0..n-1."""
        return _ArrayShard(x, ids, id_offset, name)

    @staticmethod
    def from_npy(path, ids=None, id_offset: int = 0) -> EmbeddingShard:
        """A C-ordered .npy file of float [n, d]: ``np.load(mmap_mode="r")`` reads its layout, rows are read
        with plain file reads (only what is asked for). ``ids``: int[n], the path of a .npy of int[n], or
        None for id_offset + 0..n-1."""
        return _NpyShard(path, ids, id_offset)

    @staticmethod
    def from_parquet(
        path, column: str = "image_embedding", id_column: str | None = None, id_offset: int = 0
    ) -> EmbeddingShard:
        """A Parquet file whose ``column`` is ``fixed_size_list<float16|float32|float64, d>`` (as written by
        ``clip_embed``) or a list of floats of one length. Ids come from the integer ``id_column`` or are
        id_offset + 0..n-1. Reads go row group by row group (memory bounded by a row group)."""
        return _ParquetShard(path, column, id_column, id_offset)


def array_shards(arrays: Iterable, ids: Iterable | None = None) -> list[EmbeddingShard]:
    """Shards over arrays with ids running on from one to the next (0..n-1 overall) unless given."""
    return _running(arrays, ids, EmbeddingShard.from_array)


def npy_shards(paths: Iterable, ids: Iterable | None = None) -> list[EmbeddingShard]:
    """Shards over .npy files with ids running on from one file to the next unless given."""
    return _running(paths, ids, EmbeddingShard.from_npy)


def parquet_shards(
    paths: Iterable, column: str = "image_embedding", id_column: str | None = None
) -> list[EmbeddingShard]:
    """Shards over Parquet files; without ``id_column`` the ids run on from one file to the next."""
    out, off = [], 0
    for p in paths:
        sh = EmbeddingShard.from_parquet(p, column, id_column, id_offset=off)
        off += sh.count
        out.append(sh)
    return out


def _running(items, ids, make):
    out, off = [], 0
    ids = None if ids is None else list(ids)
    for i, item in enumerate(items):
        sh = make(item, None if ids is None else ids[i], id_offset=off)
        off += sh.count
        out.append(sh)
    return out


def _as_ids(ids, count: int, id_offset: int, where: str) -> np.ndarray:
    if ids is None:
        return np.arange(id_offset, id_offset + count, dtype=np.int64)
    a = np.asarray(ids)
    if a.shape != (count,) or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ValueError(f"{where}: ids must be int[{count}] (one per row), got {a.dtype}{list(a.shape)}")
    return a.astype(np.int64, copy=False)


def _check_matrix(shape, dtype, where: str) -> None:
    if len(shape) != 2 or shape[1] == 0:
        raise ValueError(f"{where}: embeddings must be 2-D [n, d] with d > 0, got shape {tuple(shape)}")
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{where}: embeddings must be float (float16/float32), got {dtype}")


class _ArrayShard(EmbeddingShard):
    def __init__(self, x, ids, id_offset, name):
        self._x = x if isinstance(x, np.ndarray) else np.asarray(x)
        _check_matrix(self._x.shape, self._x.dtype, name)
        self.count, self.dim, self.name = int(self._x.shape[0]), int(self._x.shape[1]), name
        self._ids = _as_ids(ids, self.count, id_offset, name)

    def ids(self):
        return self._ids

    def read(self, start=0, stop=None):
        return np.asarray(self._x[start : self.count if stop is None else stop], dtype=np.float32)

    def take(self, rows):
        return np.asarray(self._x[np.asarray(rows, np.int64)], dtype=np.float32)


class _NpyShard(EmbeddingShard):
    """np.load(mmap_mode="r") gives the layout (shape, dtype, data offset); rows are then read with plain
    file reads. Reading through the mapping would leave the touched pages (and, by the kernel's
    fault-around, their neighbours: nearly the whole file for a sparse sample) in the process's RSS."""

    def __init__(self, path, ids, id_offset):
        self.path = os.fspath(path)
        self.name = self.path
        a = np.load(self.path, mmap_mode="r")
        _check_matrix(a.shape, a.dtype, self.path)
        if not a.flags.c_contiguous:
            raise ValueError(f"{self.path}: must be C-ordered (np.save(np.ascontiguousarray(x)))")
        self.count, self.dim = int(a.shape[0]), int(a.shape[1])
        self._dtype, self._offset = a.dtype, int(a.offset)
        del a
        self._ids_path = os.fspath(ids) if isinstance(ids, (str, os.PathLike)) else None
        self._ids = None if self._ids_path else _as_ids(ids, self.count, id_offset, self.path)
        if self._ids_path:
            self.ids()  # validate now, not in a worker

    def ids(self):
        if self._ids_path:
            return _as_ids(np.load(self._ids_path), self.count, 0, self._ids_path)
        return self._ids

    def read(self, start=0, stop=None):
        stop = self.count if stop is None else stop
        return self.take(np.arange(start, stop))

    def take(self, rows):
        rows = np.asarray(rows, np.int64)
        buf = np.empty((rows.size, self.dim), self._dtype)
        with io.FileIO(self.path, "r") as fh:
            _read_row_runs(fh, self._offset, rows, buf, self.path)
        return buf if buf.dtype == np.float32 else buf.astype(np.float32)


def _read_row_runs(fh: io.FileIO, base: int, rows: np.ndarray, out: np.ndarray, what: str) -> None:
    """out[i] = row rows[i] of the C-ordered rows stored from byte ``base`` of fh; rows ascending, read as
    runs of consecutive rows straight into ``out``."""
    row_bytes = out.itemsize * out.shape[1]
    brk = np.flatnonzero(np.diff(rows) != 1) + 1
    for a, b in zip(np.r_[0, brk], np.r_[brk, rows.size]):
        _readinto_at(fh, base + int(rows[a]) * row_bytes, out[a:b].data.cast("B"), what)


def _readinto_at(fh: io.FileIO, offset: int, buf: memoryview, what: str) -> None:
    fh.seek(offset)
    got = 0
    while got < buf.nbytes:
        r = fh.readinto(buf[got:])
        if not r:
            raise OSError(f"{what}: file ends before byte {offset + buf.nbytes}")
        got += r


class _ParquetShard(EmbeddingShard):
    def __init__(self, path, column, id_column, id_offset):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.column, self.id_column = os.fspath(path), column, id_column
        self.name = f"{self.path}:{column}"
        pf = pq.ParquetFile(self.path)
        schema = pf.schema_arrow
        if column not in schema.names:
            raise ValueError(f"{self.path}: no column {column!r} (columns: {schema.names})")
        t = schema.field(column).type
        if not (
            (pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t))
            and pa.types.is_floating(t.value_type)
        ):
            raise TypeError(f"{self.name}: must be a fixed_size_list or list of floats (an embedding), got {t}")
        if id_column is not None:
            if id_column not in schema.names:
                raise ValueError(f"{self.path}: no id column {id_column!r} (columns: {schema.names})")
            if not pa.types.is_integer(schema.field(id_column).type):
                raise TypeError(
                    f"{self.path}: id column {id_column!r} must be integer, got {schema.field(id_column).type}"
                )
        md = pf.metadata
        self.count = int(md.num_rows)
        self._rg_starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        self._id_offset = int(id_offset)
        if pa.types.is_fixed_size_list(t):
            self.dim = int(t.list_size)
        else:  # a plain list: the length of the first row decides, every row is checked on read
            first = next(pf.iter_batches(batch_size=1, columns=[column]), None)
            self.dim = int(len(first.column(0)[0])) if first is not None and first.num_rows else 0
        if self.count and self.dim == 0:
            raise ValueError(f"{self.name}: embeddings have length 0")

    def _file(self):
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path)

    def ids(self):
        if self.id_column is None:
            return np.arange(self._id_offset, self._id_offset + self.count, dtype=np.int64)
        col = self._file().read(columns=[self.id_column]).column(0)
        if col.null_count:
            raise ValueError(f"{self.path}: id column {self.id_column!r} has {col.null_count} nulls")
        return col.to_numpy().astype(np.int64, copy=False)

    def _rows(self, arr, where: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            raise ValueError(f"{where}: {arr.null_count} null embeddings; drop those rows before dedup")
        if pa.types.is_fixed_size_list(arr.type):
            values = arr.flatten()  # honours slicing offsets
        else:
            lengths = pc.list_value_length(arr).to_numpy()
            bad = np.flatnonzero(lengths != self.dim)
            if bad.size:
                raise ValueError(f"{where}: embedding of length {lengths[bad[0]]}, expected {self.dim}")
            values = pc.list_flatten(arr)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, self.dim)

    def chunks(self, chunk_rows=DEFAULT_CHUNK_ROWS):
        start = 0
        for b in self._file().iter_batches(batch_size=int(chunk_rows), columns=[self.column]):
            yield start, self._rows(b.column(0), f"{self.name} rows {start}..")
            start += b.num_rows

    def read(self, start=0, stop=None):
        stop = self.count if stop is None else stop
        first = int(np.searchsorted(self._rg_starts, start, side="right") - 1)
        last = int(np.searchsorted(self._rg_starts, max(stop - 1, start), side="right") - 1)
        col = self._file().read_row_groups(list(range(first, last + 1)), columns=[self.column]).column(0)
        base = int(self._rg_starts[first])
        return self._rows(col.slice(start - base, stop - start), f"{self.name} rows {start}..{stop}")

    def take(self, rows):
        import pyarrow as pa

        rows = np.asarray(rows, np.int64)
        out = np.empty((rows.size, self.dim), np.float32)
        rg = np.searchsorted(self._rg_starts, rows, side="right") - 1
        pf = self._file()
        for g in np.unique(rg):
            sel = np.flatnonzero(rg == g)
            col = pf.read_row_group(int(g), columns=[self.column]).column(0)
            local = pa.array(rows[sel] - self._rg_starts[g])
            out[sel] = self._rows(col.take(local), f"{self.name} row group {g}")
        return out


# --------------------------------------------------------------------------------------- validation


def _check_rows(x: np.ndarray, shard: EmbeddingShard, rows, ids: np.ndarray) -> None:
    """The same checks as semantic_dedup's (finite, |norm - 1| <= NORM_TOL), naming shard, row and id.
    ``rows``: the shard row of x[0] (an int) or of every row of x (an array)."""

    def where(r):
        row = rows + r if isinstance(rows, (int, np.integer)) else rows[r]
        return f"{shard.name}: row {int(row)} (id {int(ids[r])})"

    # squared norms by einsum: no [m, d] temporaries (a NaN or inf element makes its row's sum non-finite)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    for r in np.flatnonzero(~np.isfinite(norms)):
        if not np.isfinite(x[r]).all():
            raise ValueError(f"{where(int(r))} contains NaN or infinite values")
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOL))
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"{where(first)} has norm {norms[first]:.6f}: embedding rows must be L2-normalised "
            f"(|norm - 1| <= {NORM_TOL}); normalise with x / np.linalg.norm(x, axis=1, keepdims=True)"
        )


def _check_shards(shards) -> list[EmbeddingShard]:
    if isinstance(shards, EmbeddingShard):
        shards = [shards]
    shards = list(shards)
    for i, sh in enumerate(shards):
        if not isinstance(sh, EmbeddingShard):
            raise TypeError(
                f"shards[{i}] is a {type(sh).__name__}, expected an EmbeddingShard (see "
                "EmbeddingShard.from_array / from_npy / from_parquet)"
            )
    nonempty = [sh for sh in shards if sh.count > 0]
    if not nonempty:
        raise ValueError("no embeddings: the shards are empty" if shards else "no shards given")
    d = nonempty[0].dim
    for sh in nonempty:
        if sh.dim != d:
            raise ValueError(
                f"embedding dimension differs between shards: {nonempty[0].name} has {d}, {sh.name} has {sh.dim}"
            )
    return nonempty


def _sorted_ids(shards) -> np.ndarray:
    ids = np.concatenate([sh.ids() for sh in shards])
    ids.sort()
    if ids[0] < 0:
        raise ValueError(f"sample ids must be >= 0 (-1 marks 'kept' in duplicate_of), got {int(ids[0])}")
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if dup.size:
        raise ValueError(f"duplicate sample ids across shards: {dup.size} repeats, e.g. id {int(ids[dup[0]])}")
    return ids


def _keep_policy(keep):
    """-> ("hard"|"easy"|"random", None) or ("scores", (sorted score ids, their scores))."""
    if isinstance(keep, str):
        if keep not in KEEP_POLICIES:
            raise ValueError(
                f"keep must be one of {KEEP_POLICIES} or scores by id ((ids, scores) or a "
                f"mapping id -> score), got {keep!r}"
            )
        return keep, None
    if isinstance(keep, Mapping):
        sid = np.fromiter(keep.keys(), np.int64, len(keep))
        sc = np.fromiter(keep.values(), np.float64, len(keep))
    elif isinstance(keep, tuple) and len(keep) == 2:
        sid, sc = np.asarray(keep[0]), np.asarray(keep[1], np.float64)
        if sid.ndim != 1 or not np.issubdtype(sid.dtype, np.integer) or sc.shape != sid.shape:
            raise ValueError("keep=(ids, scores) needs int[m] ids and float[m] scores of the same length")
    else:
        raise TypeError(
            "keep must be 'hard', 'easy', 'random', or scores by id: (ids, scores) or a mapping "
            f"id -> score; got {type(keep).__name__} (a bare score array has no ids)"
        )
    o = np.argsort(sid, kind="stable")
    sid, sc = sid[o].astype(np.int64), sc[o]
    if sid.size > 1 and (sid[1:] == sid[:-1]).any():
        raise ValueError("keep scores: an id appears more than once")
    return "scores", (sid, sc)


# ------------------------------------------------------------------------------------------- sample

_M64 = (1 << 64) - 1


def id_hash(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint64 seeded hash of every id; distinct ids get distinct hashes (a bijection for each seed)."""
    salt = int(mix64(np.array([(int(seed) + GOLDEN) & _M64], np.uint64))[0])
    with np.errstate(over="ignore"):
        return mix64(np.asarray(ids, np.int64).view(np.uint64) + np.uint64(salt))


def sample_ids(shards, sample_size: int, seed: int = 0) -> np.ndarray:
    """The ``sample_size`` ids (ascending) with the smallest :func:`id_hash`: a uniform sample depending
    only on the set of ids and the seed. Holds ``sample_size`` hashes plus one shard's ids at a time."""
    shards = _check_shards(shards)
    s = int(sample_size)
    if s < 1:
        raise ValueError(f"sample_size must be >= 1, got {sample_size}")
    pool = np.zeros(0, np.uint64)
    for sh in shards:
        pool = np.concatenate([pool, id_hash(sh.ids(), seed)])
        if pool.size > s:
            pool = np.partition(pool, s - 1)[:s]
    thr = pool.max()
    out = np.concatenate([ids[id_hash(ids, seed) <= thr] for ids in (sh.ids() for sh in shards)])
    out.sort()
    return out


def draw_sample(shards, sample_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[s] ascending, rows float32[s, d] in that order) of the :func:`sample_ids` sample."""
    shards = _check_shards(shards)
    sel = sample_ids(shards, sample_size, seed)
    rows = np.empty((sel.size, shards[0].dim), np.float32)
    for sh in shards:
        ids = sh.ids()
        local = np.flatnonzero(np.isin(ids, sel, assume_unique=True))
        for a in range(0, local.size, _TAKE_ROWS):  # pieces: the copy next to ``rows`` stays small
            part = local[a : a + _TAKE_ROWS]
            x = sh.take(part)
            _check_rows(x, sh, part, ids[part])
            rows[np.searchsorted(sel, ids[part])] = x
    return sel, rows


def fit_centroids(sample: np.ndarray, k: int, seed: int = 0, niter: int = 20, device: str = "auto") -> np.ndarray:
    """Pass 1's clustering: spherical k-means (:func:`mmcurate.index.kmeans`) trained on every row of
    ``sample`` (float32 [s, d], unit rows, in id order), returned as unit rows (:func:`_unit_rows`). The
    in-memory semantic_dedup stage calls this too, so both fit identical centroids on the same sample."""
    from mmcurate import index as mindex

    s = int(sample.shape[0])
    centroids, _ = mindex.kmeans(
        sample, int(k), niter=niter, spherical=True, seed=seed, device=device, max_points_per_centroid=-(-s // int(k))
    )
    return _unit_rows(centroids)


def assign_chunk(x: np.ndarray, centroids: np.ndarray, device: str) -> np.ndarray:
    """int64 nearest unit centroid (inner product) of every row of one chunk, in one faiss call. faiss picks
    its kernel by the number of rows (a plain loop below 20 rows, BLAS above), which can move a near-tie by
    a rounding step, so a caller that wants pass 2's labels calls this on the same chunks."""
    from mmcurate import index as mindex

    labels, _ = mindex.assign(x, centroids, metric="ip", device=device, chunk_size=max(int(x.shape[0]), 1))
    return labels


def _unit_rows(c: np.ndarray) -> np.ndarray:
    """Unit rows by semantic_dedup's own formula, repeated to a fixed point, so that semantic_dedup given
    these centroids (which it renormalises) computes bit-identical cosines."""
    c = np.asarray(c, np.float32)
    for _ in range(8):
        u = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        if np.array_equal(u, c):
            break
        c = u
    return np.ascontiguousarray(c, np.float32)


# ------------------------------------------------------------------------------------------- result


@dataclass
class SemDedupStreamResult(ThresholdedSimilarity):
    """Like :class:`~mmcurate.curate.semantic.SemDedupResult`, keyed by sample id: every per-sample array
    is aligned with ``ids`` (ascending)."""

    ids: np.ndarray  # int64[n], ascending
    keep: np.ndarray  # bool[n]
    duplicate_of: np.ndarray  # int64[n]: the witness's *id*, -1 where kept
    cluster: np.ndarray  # int32[n]
    max_similarity: np.ndarray  # float32[n], -inf for the first member of each cluster's keep order
    centroids: np.ndarray  # float32[k, d], unit rows
    eps: float
    stats: dict = field(default_factory=dict)
    # with representatives=True: (duplicate ids ascending, their kept representatives' ids, float64 cosine
    # between the two by semantic.pair_cosine64), computed in the partition tasks; else None
    representatives: tuple | None = None

    def positions(self, ids) -> np.ndarray:
        """Positions in the result arrays of the given ids (KeyError for an unknown id)."""
        ids = np.asarray(ids, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        missing = self.ids[pos] != ids
        if missing.any():
            raise KeyError(f"id {int(ids[missing][0])} is not in the result")
        return pos

    @property
    def representative(self) -> np.ndarray:
        """int64[n]: the id of the kept sample each sample ends up at by following ``duplicate_of`` (its own
        id if kept). Usable as a group labelling (e.g. for leakage-free splits)."""
        pos = np.arange(self.ids.size)
        dup = ~self.keep
        rep = pos.copy()
        rep[dup] = self.positions(self.duplicate_of[dup])
        # each hop goes to a strictly earlier-ranked sample: pointer jumping ends in <= log2(n) rounds
        while True:
            nxt = rep[rep]
            if np.array_equal(nxt, rep):
                return self.ids[rep]
            rep = nxt


# ------------------------------------------------------------------------------------------- pass 2


def _part_dir(root: str, p: int) -> str:
    return os.path.join(root, f"p{p:06d}")


def _cosine64(x: np.ndarray, c64: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine of each row to its centroid in float64, row by row as keep_order computes it."""
    out = np.empty(x.shape[0], np.float64)
    for s in range(0, x.shape[0], _COS_ROWS):
        e = np.asarray(x[s : s + _COS_ROWS], dtype=np.float64)
        out[s : s + _COS_ROWS] = np.einsum("ij,ij->i", e, c64[labels[s : s + _COS_ROWS]])
    return out


def _assign_shard(task) -> np.ndarray:
    """Pass-2 task: stream one shard, assign, append to its (shard, partition) pieces of the spill.
    Returns int64[k] rows per cluster."""
    si, shard, centroids, keys, policy, spill, n_part, chunk_rows, device = task
    k = centroids.shape[0]
    c64 = centroids.astype(np.float64)
    counts = np.zeros(k, np.int64)
    ids = shard.ids()
    for start, x in shard.chunks(chunk_rows):
        m = x.shape[0]
        cid = ids[start : start + m]
        _check_rows(x, shard, start, cid)
        labels = assign_chunk(x, centroids, device)
        if policy in ("hard", "easy"):
            cos = _cosine64(x, c64, labels)
            key = cos if policy == "hard" else -cos
        else:
            key = keys[start : start + m]
        part = labels % n_part
        order = np.lexsort((labels, part))  # by partition, then cluster: a cluster's rows stay contiguous
        bounds = np.searchsorted(part[order], np.arange(n_part + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            o = order[bounds[p] : bounds[p + 1]]
            meta = np.empty(o.size, META_DTYPE)
            meta["id"], meta["key"], meta["cluster"] = cid[o], key[o], labels[o]
            spill.append(int(p), si, meta, np.ascontiguousarray(x[o]))
        counts += np.bincount(labels, minlength=k)
    return counts


# ------------------------------------------------------------------------------------------- the spill


class FileSpill:
    """Pass 2's rows on disk under ``root`` (which every worker must see): per partition and shard, a file of
    (id, key, cluster) records and one of embedding rows, appended chunk by chunk. Picklable: tasks in other
    processes append to it; pass 3 reads one partition at a time, a cluster's rows by coalesced reads."""

    def __init__(self, root):
        self.root = str(root)

    def create(self, n_partitions: int) -> None:
        for p in range(n_partitions):
            os.makedirs(_part_dir(self.root, p), exist_ok=True)

    def append(self, p: int, si: int, meta: np.ndarray, x: np.ndarray) -> None:
        base = os.path.join(_part_dir(self.root, p), f"s{si:06d}")
        with open(base + ".meta", "ab") as f:
            meta.tofile(f)
        with open(base + ".emb", "ab") as f:
            x.tofile(f)

    def open_partition(self, p: int, d: int):
        """(the partition's records in shard order, a reader of its rows by position in that order)."""
        pdir = _part_dir(self.root, p)
        names = sorted(f[:-5] for f in os.listdir(pdir) if f.endswith(".meta"))
        metas = [np.fromfile(os.path.join(pdir, n + ".meta"), META_DTYPE) for n in names]
        starts = np.cumsum([0] + [m.size for m in metas])
        meta = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
        return meta, _RowReader([os.path.join(pdir, n + ".emb") for n in names], starts, d)

    def disk_bytes(self, n_partitions: int) -> int:
        return sum(e.stat().st_size for p in range(n_partitions) for e in os.scandir(_part_dir(self.root, p)))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class MemorySpill:
    """Pass 2's rows held in this process (tasks must run here, e.g. builtin ``map``): the same pieces as
    :class:`FileSpill`, nothing written. A partition's pieces are released once pass 3 has opened it."""

    def __init__(self):
        self._pieces: dict[int, dict[int, list]] = {}

    def create(self, n_partitions: int) -> None:
        self._pieces = {p: {} for p in range(n_partitions)}

    def append(self, p: int, si: int, meta: np.ndarray, x: np.ndarray) -> None:
        self._pieces[p].setdefault(si, []).append((meta, x))

    def open_partition(self, p: int, d: int):
        pieces = [piece for _, shard in sorted(self._pieces.pop(p, {}).items()) for piece in shard]
        meta = np.concatenate([m for m, _ in pieces]) if pieces else np.zeros(0, META_DTYPE)
        rows = np.concatenate([x for _, x in pieces]) if pieces else np.zeros((0, d), np.float32)
        return meta, _ArrayRows(rows)

    def disk_bytes(self, n_partitions: int) -> int:
        return 0

    def remove(self) -> None:
        self._pieces = {}


class _ArrayRows:
    """:class:`_RowReader`'s interface over rows in memory."""

    def __init__(self, rows: np.ndarray):
        self.rows: np.ndarray | None = rows

    def read_sorted(self, q: np.ndarray, out: np.ndarray) -> None:
        assert self.rows is not None, "read after close"
        np.take(self.rows, q, axis=0, out=out)

    def close(self) -> None:
        self.rows = None


# ------------------------------------------------------------------------------------------- pass 3


class _RowReader:
    """Reads rows of a partition's embedding files (concatenated in file order) by global row number, with
    coalesced reads into a caller's buffer; a bounded number of files stays open."""

    def __init__(self, paths: list[str], starts: np.ndarray, d: int):
        self.paths, self.starts, self.row_bytes = paths, starts, 4 * d
        self._open: dict[int, io.FileIO] = {}

    def _fh(self, f: int) -> io.FileIO:
        fh = self._open.get(f)
        if fh is None:
            if len(self._open) >= _MAX_OPEN_FILES:
                self._open.pop(next(iter(self._open))).close()
            fh = self._open[f] = io.FileIO(self.paths[f], "r")
        return fh

    def read_sorted(self, q: np.ndarray, out: np.ndarray) -> None:
        """out[i] = row q[i] for ascending q."""
        fi = np.searchsorted(self.starts, q, side="right") - 1
        brk = np.flatnonzero((np.diff(q) != 1) | (np.diff(fi) != 0)) + 1
        for a, b in zip(np.r_[0, brk], np.r_[brk, q.size]):
            f = int(fi[a])
            _readinto_at(
                self._fh(f),
                int(q[a] - self.starts[f]) * self.row_bytes,
                out[a:b].data.cast("B"),
                f"spill file {self.paths[f]}",
            )

    def close(self):
        for fh in self._open.values():
            fh.close()
        self._open.clear()


def _representatives(best: np.ndarray, arg: np.ndarray, eps: float) -> np.ndarray:
    """Within one cluster in keep order: each row's kept representative (the end of its witness chain;
    itself when kept), as semantic.SemDedupResult.representative computes it."""
    dup = best >= np.float32(1.0 - eps)
    rep = np.arange(best.size)
    rep[dup] = arg[dup]
    while True:  # each hop goes to an earlier row in keep order
        nxt = rep[rep]
        if np.array_equal(nxt, rep):
            return rep
        rep = nxt


def _dedup_partition(task):
    """Pass-3 task: keep order and block max similarity for every cluster of one partition.
    Returns (ids, max_similarity, partner id, cluster, largest cluster rows held, representatives), the last
    being (duplicate ids, their kept representatives' ids, cosine to it) when eps is given, else None."""
    spill, p, d, block, use_torch, eps = task
    meta, reader = spill.open_partition(p, d)
    ids, cluster = meta["id"].copy(), meta["cluster"].copy()
    # keep order: cluster, then key, then id (semantic.keep_order with the id where it uses the index)
    order = np.lexsort((ids, meta["key"], cluster))
    del meta
    cl = cluster[order]
    edges = np.r_[0, np.flatnonzero(cl[1:] != cl[:-1]) + 1, cl.size]
    best = np.full(ids.size, -np.inf, np.float32)
    partner = np.full(ids.size, -1, np.int64)
    peak = 0
    rep_dup, rep_id, rep_cos = [], [], []
    try:
        for a, b in zip(edges[:-1], edges[1:]):
            members = order[a:b]  # partition rows in keep order
            if members.size < 2:
                continue
            peak = max(peak, int(members.size))
            srt = np.argsort(members, kind="stable")
            x = np.empty((members.size, d), np.float32)
            y = np.empty_like(x)
            reader.read_sorted(members[srt], y)  # file order, then permuted into keep order
            x[srt] = y
            del y
            if use_torch:
                import torch

                v, arg = block_max_similarity_torch(torch.from_numpy(x).cuda(), block)
            else:
                v, arg = block_max_similarity(x, block)
            best[members] = v
            partner[members] = np.where(arg >= 0, ids[members[np.maximum(arg, 0)]], -1)
            if eps is not None:
                rep = _representatives(np.asarray(v), np.asarray(arg), eps)
                dl = np.flatnonzero(rep != np.arange(rep.size))
                if dl.size:
                    rep_dup.append(ids[members[dl]])
                    rep_id.append(ids[members[rep[dl]]])
                    rep_cos.append(pair_cosine64(x[dl], x[rep[dl]]))
    finally:
        reader.close()
    reps = None
    if eps is not None:
        reps = (
            np.concatenate(rep_dup) if rep_dup else np.zeros(0, np.int64),
            np.concatenate(rep_id) if rep_id else np.zeros(0, np.int64),
            np.concatenate(rep_cos) if rep_cos else np.zeros(0, np.float64),
        )
    return ids, best, partner, cluster, peak, reps


# -------------------------------------------------------------------------------------------- driver


def semantic_dedup_streaming(
    shards: Sequence[EmbeddingShard] | EmbeddingShard,
    eps: float = 0.05,
    n_clusters: int = 100,
    keep="hard",
    sample_size: int | None = None,
    seed: int = 0,
    niter: int = 20,
    device: str = "auto",
    spill_dir: str | None = None,
    spill: FileSpill | MemorySpill | None = None,
    n_partitions: int | None = None,
    map_fn: Callable = map,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    block: int = DEFAULT_BLOCK,
    representatives: bool = False,
) -> SemDedupStreamResult:
    """SemDeDup over embedding shards without holding the embedding matrix (see the module docstring).

    ``shards``: :class:`EmbeddingShard` s with unique global ids (>= 0) and L2-normalised rows.
    ``keep``: "hard" | "easy" | "random" | scores by id, ``(ids, scores)`` or a mapping id -> score (every
    sample needs one; NaN ranks last). ``n_clusters`` is capped at n. ``sample_size`` rows train k-means
    (default ``min(n, 256 * n_clusters)``; capped at n; must be >= n_clusters). ``spill``: where pass 2's
    rows go, a :class:`FileSpill` (its directory removed at the end) or a :class:`MemorySpill` (builtin
    ``map`` only: tasks must share this process); default a FileSpill in a fresh subdirectory of
    ``spill_dir`` (default the system temp dir). ``n_partitions``
    (default: ~4M rows each, at least 16, at most n_clusters) sets the pass-3 task count. ``map_fn`` runs
    the shard tasks of pass 2 and the partition tasks of pass 3; results do not depend on it.
    ``representatives``: also return, per duplicate, its kept representative and the cosine to it
    (``result.representatives``), found inside the partition tasks where the cluster's rows are at hand, so the
    driver never gathers embeddings for them.
    """
    check_eps(eps)
    shards = _check_shards(shards)
    policy, scores = _keep_policy(keep)
    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    t_start = time.perf_counter()
    all_ids = _sorted_ids(shards)
    n, d = all_ids.size, shards[0].dim
    k = max(1, min(int(n_clusters), n))
    s = min(n, TRAIN_POINTS_PER_CENTROID * k) if sample_size is None else min(int(sample_size), n)
    if s < k:
        raise ValueError(
            f"sample_size={sample_size} is smaller than n_clusters={k}: k-means needs at least "
            "one sample row per cluster (use several per cluster, e.g. 256)"
        )
    if n_partitions is None:
        n_part = min(k, max(MIN_DEFAULT_PARTITIONS, -(-n // DEFAULT_PARTITION_ROWS)))
    else:
        n_part = int(n_partitions)
        if n_part < 1:
            raise ValueError(f"n_partitions must be >= 1, got {n_partitions}")
        n_part = min(n_part, k)
    if scores is not None:
        sid, sc = scores
        pos = np.minimum(np.searchsorted(sid, all_ids), max(sid.size - 1, 0))
        missing = (sid[pos] != all_ids) if sid.size else np.ones(n, bool)
        if missing.any():
            raise ValueError(
                f"keep scores: {int(missing.sum())} sample ids have no score, e.g. id {int(all_ids[missing][0])}"
            )
        del pos
    from mmcurate import index as mindex  # deferred: faiss only when used

    dev = mindex.resolve_device(device)
    times = {}

    # pass 1: sample -> spherical k-means -> unit centroids
    t0 = time.perf_counter()
    _, sample = draw_sample(shards, s, seed)
    times["sample_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    centroids = fit_centroids(sample, k, seed=seed, niter=niter, device=dev)
    del sample
    times["kmeans_s"] = time.perf_counter() - t0

    def shard_keys(sh: EmbeddingShard):
        if policy == "random":
            assert perm is not None  # drawn below for "random", before any shard is keyed
            return perm[np.searchsorted(all_ids, sh.ids())].astype(np.float64)
        if policy == "scores":
            v = scores[1][np.searchsorted(scores[0], sh.ids())]
            return np.where(np.isnan(v), np.inf, -v)  # highest first, NaN last (as keep_order)
        return None

    perm = np.random.default_rng(seed).permutation(n) if policy == "random" else None
    if spill is None:
        spill = FileSpill(tempfile.mkdtemp(prefix="semstream-", dir=spill_dir))
    try:
        spill.create(n_part)
        # pass 2: streaming assignment, spilled by partition
        t0 = time.perf_counter()
        tasks = (
            (si, sh, centroids, shard_keys(sh), policy, spill, n_part, chunk_rows, dev) for si, sh in enumerate(shards)
        )
        sizes = np.zeros(k, np.int64)
        for c in map_fn(_assign_shard, tasks):
            sizes += c
        perm = None
        times["assign_s"] = time.perf_counter() - t0
        part_sizes = np.bincount(np.arange(k) % n_part, weights=sizes, minlength=n_part).astype(np.int64)
        spill_bytes = spill.disk_bytes(n_part)

        # pass 3: per partition, keep order and block max similarity per cluster
        t0 = time.perf_counter()
        use_torch = dev == "cuda" and torch_cuda_ok()
        keep_mask = np.ones(n, bool)
        best = np.full(n, -np.inf, np.float32)
        dup_of = np.full(n, -1, np.int64)
        cluster = np.full(n, -1, np.int32)
        peak = 0
        tasks3 = (
            (spill, int(p), d, int(block), use_torch, float(eps) if representatives else None)
            for p in np.flatnonzero(part_sizes)
        )
        rep_parts = []
        for ids_p, best_p, partner_p, cluster_p, peak_p, reps_p in map_fn(_dedup_partition, tasks3):
            if reps_p is not None:
                rep_parts.append(reps_p)
            pos = np.searchsorted(all_ids, ids_p)
            dup = best_p >= np.float32(1.0 - eps)
            best[pos] = best_p
            cluster[pos] = cluster_p
            keep_mask[pos] = ~dup
            dup_of[pos] = np.where(dup, partner_p, -1)
            peak = max(peak, peak_p)
        times["pairwise_s"] = time.perf_counter() - t0
    finally:
        spill.remove()
    if (cluster < 0).any():  # every row was spilled and read back: a miss means a corrupted spill
        raise RuntimeError(f"{int((cluster < 0).sum())} samples were lost between passes 2 and 3")
    times["total_s"] = time.perf_counter() - t_start
    stats = {
        "n": int(n),
        "d": int(d),
        "n_shards": len(shards),
        "n_clusters": int(k),
        "sample_size": int(s),
        "n_partitions": int(n_part),
        "chunk_rows": chunk_rows,
        "device": dev,
        "cluster_sizes": {
            **percentile_summary(sizes, (50, 90, 99), min_max=True),
            "n_empty": int(np.count_nonzero(sizes == 0)),
        },
        "partition_sizes": part_sizes.tolist(),
        "peak_task_rows": int(max(peak, min(chunk_rows, max(sh.count for sh in shards)))),
        "largest_cluster_rows": int(sizes.max()),
        "spill_bytes": int(spill_bytes),
        "driver_bytes_per_sample": 25,
        "seconds": {k_: round(v, 4) for k_, v in times.items()},
    }
    reps = None
    if representatives:
        dup_ids = np.concatenate([r[0] for r in rep_parts]) if rep_parts else np.zeros(0, np.int64)
        o = np.argsort(dup_ids, kind="stable")
        reps = (
            dup_ids[o],
            (np.concatenate([r[1] for r in rep_parts]) if rep_parts else np.zeros(0, np.int64))[o],
            (np.concatenate([r[2] for r in rep_parts]) if rep_parts else np.zeros(0, np.float64))[o],
        )
    return SemDedupStreamResult(
        ids=all_ids,
        keep=keep_mask,
        duplicate_of=dup_of,
        cluster=cluster,
        max_similarity=best,
        centroids=centroids,
        eps=float(eps),
        stats=stats,
        representatives=reps,
    )
