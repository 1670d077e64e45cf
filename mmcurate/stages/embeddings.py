"""Embedding columns <-> numpy, stated once: clip_embed writes them, clip_heads, semantic_dedup and balance
read them; semantic_dedup and balance get theirs shard by shard through :func:`step_embeddings`.

An embedding column is a fixed_size_list (as clip_embed writes it: float16, L2-normalised) or a list of
floats per sample. It becomes a float32 [n, d] matrix by one flatten + reshape of the rows that have one
(no per-row Python), and is re-normalised where a step needs unit rows (fp16 storage loses a little of the
norm). A null, wrong-length, non-finite or zero-norm embedding is unusable; a column of another type is a
StageError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.schema import REJECTS_SCHEMA, rejects_table
from mmcurate.pipeline.stage import SAMPLE_ID, StageError, with_sample_ids

DEFAULT_EMBEDDING_COLUMN = "image_embedding"
#: Embeddings with a smaller norm are "all zeros" (unusable: no direction).
MIN_NORM = 1e-6


def embedding_array(emb: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """float [n, d] -> fixed_size_list<float16, d>; rows where valid is False are null."""
    emb = np.ascontiguousarray(emb, dtype=np.float16)
    n, d = emb.shape
    values = pa.array(emb.reshape(-1), type=pa.float16())
    mask = None if valid is None or valid.all() else pa.array(~np.asarray(valid, dtype=bool))
    return pa.FixedSizeListArray.from_arrays(values, d, mask=mask)


def _rows(arr, ok: np.ndarray, d: int, dtype=np.float32) -> np.ndarray:
    """The embeddings of the rows where ok (each of length d) as dtype[m, d], in row order: one flatten."""
    # Copies are what bound memory at scale (a 1M x 512 fp16 column is 1 GB): filter only when some rows
    # are unusable, and convert once (no copy when the values already are `dtype` and writeable).
    usable = arr if ok.all() else arr.filter(pa.array(ok))
    flat = pc.list_flatten(usable).to_numpy(zero_copy_only=False)  # nulls -> NaN
    own = flat.dtype == dtype and flat.flags.writeable  # else a copy the caller may change in place
    return flat.astype(dtype, copy=not own).reshape(-1, max(d, 1))[:, :d] if d else np.zeros((0, 0), dtype)


def embeddings_to_numpy(column, dtype=np.float32) -> np.ndarray:
    """A fixed_size_list embedding column -> [n, d] (null rows -> NaN), as stored (not re-normalised)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    d = column.type.list_size
    n = len(column)
    out = np.full((n, d), np.nan, dtype=dtype)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        out[valid] = _rows(column, valid, d, dtype)
    return out


def _embedding_array(column, name: str, stage: str):
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if not (
        pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
    ) or not pa.types.is_floating(t.value_type):
        raise StageError(
            f"stage '{stage}': column '{name}' must be a list or fixed_size_list of floats (an embedding), got {t}"
        )
    return arr


def _lengths(arr) -> tuple[np.ndarray, np.ndarray]:
    """(valid bool[n], length int64[n], -1 for nulls) of an embedding array."""
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(arr.type):
        return valid, np.where(valid, int(arr.type.list_size), -1).astype(np.int64)
    lengths = pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return valid, lengths


def embedding_length_counts(column, name: str = DEFAULT_EMBEDDING_COLUMN, stage: str = "") -> np.ndarray:
    """bincount of the lengths of the present, non-empty embeddings (index = length). Summed over shards and
    argmax'd, it gives the common length that embedding_matrix picks over all of them."""
    valid, lengths = _lengths(_embedding_array(column, name, stage))
    return np.bincount(lengths[valid & (lengths > 0)]).astype(np.int64)


def embedding_matrix(column, name: str = DEFAULT_EMBEDDING_COLUMN, stage: str = "", dim: int | None = None):
    """An Arrow list/fixed_size_list<float16|float32|float64> column -> (x float32[m, d] unit rows,
    ok bool[n], details list[n]) where x holds the rows with ok True (in order) and details says why the
    others are unusable. d is the common length of the column's embeddings, or ``dim`` when given (a shard of
    a larger set uses the set's). Raises StageError when the column is not a list of floats. Row by row:
    a row's output does not depend on the other rows (beyond d)."""
    arr = _embedding_array(column, name, stage)
    t = arr.type
    n = len(arr)
    valid, lengths = _lengths(arr)
    if dim is not None:
        d = int(dim)
    elif pa.types.is_fixed_size_list(t):
        d = int(t.list_size)
    else:
        present = lengths[valid & (lengths > 0)]
        d = int(np.bincount(present).argmax()) if present.size else 0  # the common length
    ok = valid & (lengths == d) & (d > 0)
    x = _rows(arr, ok, d)  # float32, ours: normalised in place
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(x, axis=1) if x.size else np.zeros(x.shape[0], np.float32)
    good = np.isfinite(norms) & (norms > MIN_NORM)
    if good.all():
        x /= norms[:, None]
    else:
        x = x[good]
        x /= norms[good, None]
    rows = np.flatnonzero(ok)
    details = [None] * n
    for i in np.flatnonzero(~valid):
        details[i] = f"no {name} value"
    for i in np.flatnonzero(valid & ~ok):
        details[i] = f"{name} has length {int(lengths[i])}, expected {d}"
    for j in np.flatnonzero(~good):
        details[rows[j]] = f"{name} is {'all zeros' if np.isfinite(norms[j]) else 'not finite'}"
    ok[rows[~good]] = False
    return np.ascontiguousarray(x, dtype=np.float32), ok, details


# ---------------------------------------------------------------------------------------------------------
# A global step's embeddings, shard by shard


def no_embedding_rejects(table: pa.Table, ok: np.ndarray, details: list, stage: str) -> pa.Table:
    """The rejects (reason ``no_embedding``) of ``table``'s rows whose embedding is unusable (``~ok``)."""
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


@dataclass
class StepEmbeddings:
    """The survivors' usable embeddings for one global step: ``shards`` (per survivor shard with any, unit
    float32 rows in sample-id order, kept in the step's partition store), their sample ``ids`` (ascending,
    one per row of the shards in order), the ``no_embedding`` rejects (with SAMPLE_ID) and, when asked for,
    the ``scores`` column's values for the usable rows (in ``ids`` order)."""

    shards: list
    ids: np.ndarray
    no_embedding: pa.Table
    scores: pa.ChunkedArray | None

    @property
    def n(self) -> int:
        return int(self.ids.size)


def step_embeddings(ctx, store, stage: str, column: str, score_column: str | None = None) -> StepEmbeddings:
    """One task per survivor shard (``ctx.map_fn``): its embeddings through :func:`embedding_matrix`, the
    usable rows stored with ``store.embeddings``. The length is the one most embeddings of the whole step
    have (as embedding_matrix picks it over one table): shards whose own common length differs are redone
    with it, so the result does not depend on how the survivors are split into shards."""
    views = ctx.views()
    outs = list(ctx.map_fn(_embedding_task, [(v, store, stage, column, score_column, None) for v in views]))
    width = max((o["counts"].size for o in outs), default=0)
    total = sum((np.pad(o["counts"], (0, width - o["counts"].size)) for o in outs), np.zeros(width, np.int64))
    if total.sum():
        d = int(total.argmax())
        redo = [i for i, o in enumerate(outs) if o["d"] != d]
        again = ctx.map_fn(_embedding_task, [(views[i], store, stage, column, score_column, d) for i in redo])
        for i, o in zip(redo, again):
            outs[i] = o
    used = [o for o in outs if o["shard"] is not None]
    rejects = [o["rejects"] for o in outs if o["rejects"].num_rows]
    return StepEmbeddings(
        shards=[o["shard"] for o in used],
        ids=np.concatenate([o["ids"] for o in used]) if used else np.zeros(0, np.int64),
        no_embedding=pa.concat_tables(rejects) if rejects else with_sample_ids(REJECTS_SCHEMA.empty_table(), []),
        scores=pa.chunked_array([o["scores"] for o in used]) if score_column and used else None,
    )


def _embedding_task(task) -> dict:
    """One shard: its usable embeddings normalised (embedding_matrix, with the step's common length when
    given) and stored; its no_embedding rejects; the length counts; the usable rows' ids and scores."""
    view, store, stage, column, score_column, dim = task
    t = view.read(["key", "source", column, *([score_column] if score_column else [])])
    col = t.column(column)
    counts = embedding_length_counts(col, column, stage)
    x, ok, details = embedding_matrix(col, column, stage, dim=dim)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    rows = np.flatnonzero(ok)
    return {
        "counts": counts,
        "d": int(x.shape[1]),
        "ids": ids[rows],
        "shard": store.embeddings(f"{view.index:05d}", x, ids[rows]) if rows.size else None,
        "rejects": with_sample_ids(no_embedding_rejects(t, ok, details, stage), ids[~ok]),
        "scores": t.column(score_column).take(pa.array(rows)).combine_chunks() if score_column else None,
    }


def task_device(ctx, device: str) -> str:
    """The faiss device a global step's tasks use: ``device`` resolved, but "cpu" where the context's tasks
    would not see the GPU the driver sees (e.g. Ray tasks scheduled without one)."""
    from mmcurate import index as mindex

    dev = mindex.resolve_device(device)
    return "cpu" if dev == "cuda" and not ctx.tasks_see_gpu else dev
