"""Embedding columns <-> numpy, stated once: clip_embed writes them, clip_heads, semantic_dedup and balance
read them.

An embedding column is a fixed_size_list (as clip_embed writes it: float16, L2-normalised) or a list of
floats per sample. It becomes a float32 [n, d] matrix by one flatten + reshape of the rows that have one
(no per-row Python), and is re-normalised where a step needs unit rows (fp16 storage loses a little of the
norm). A null, wrong-length, non-finite or zero-norm embedding is unusable; a column of another type is a
StageError.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.stage import StageError

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
