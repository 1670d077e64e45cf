"""Exact Hamming search over 64-bit codes (pHash, dHash, ...) and 256-bit codes (PDQ): radius self-join,
query radius search (with dihedral variants), top-k, distances.

64-bit codes are accepted as
  * ``np.uint64[n]`` (the canonical form),
  * ``np.int64[n]`` (reinterpreted bit for bit, so codes >= 2**63 survive a trip through signed storage),
  * ``np.uint8[n, 8]`` rows of packed bytes, as faiss ``IndexBinary*`` stores 64-bit codes: each row is read
    as one little-endian uint64 (``row.view('<u8')``), i.e. byte b holds bits 8b..8b+7. Hamming distance
    does not depend on which bit goes where, so any consistent packing (imagehash's big-endian hex
    included) yields the same pairs and neighbours.
256-bit codes (PDQ) are accepted as ``np.uint64[n, 4]`` / ``np.int64[n, 4]`` (the canonical form: bit b in bit
b % 64 of word b // 64) or ``np.uint8[n, 32]`` packed bytes (faiss's layout for d=256, read as four
little-endian uint64 per row). ``uint64[n, 1]`` is the 64-bit form.
Anything else (floats, other integer widths, object arrays) raises ``TypeError``.
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import INT32_MAX, INT64_MAX, check_int, check_threads

_PAIR_METHODS = ("auto", "mih", "brute_force")
#: Codes of 64 * W bits; distances are uint8, so 256-bit radii stop at 255.
_WORDS = (1, 4)
_MAX_DISTANCE = {1: 64, 4: 255}
#: Variants per dihedral query: the 8 symmetries of the square (PDQ's dihedral hashes).
DIHEDRAL = 8


def as_codes(codes, arg: str = "codes") -> np.ndarray:
    """Normalise accepted code layouts to a C-contiguous ``np.uint64[n]`` (zero-copy where possible)."""
    if hasattr(codes, "__cuda_array_interface__") and not isinstance(codes, np.ndarray):
        raise TypeError(f"{arg} is a GPU array; pass device='cuda' (or 'auto') to search it on the GPU")
    a = np.asarray(codes)
    if a.ndim == 2 and a.dtype == np.uint8:
        if a.shape[1] != 8:
            raise ValueError(f"{arg}: packed uint8 codes must have shape (n, 8), got {a.shape}")
        return np.ascontiguousarray(a).view("<u8").reshape(-1).astype(np.uint64, copy=False)
    if a.ndim != 1:
        raise ValueError(f"{arg} must be 1-D uint64 (or (n, 8) packed uint8), got shape {a.shape}")
    if a.dtype == np.uint64:
        return np.ascontiguousarray(a)
    if a.dtype == np.int64:
        return np.ascontiguousarray(a).view(np.uint64)
    if a.size == 0 and a.dtype == np.float64:  # np.asarray([]) is float64: an empty list is still valid
        return np.zeros(0, dtype=np.uint64)
    raise TypeError(f"{arg} must hold 64-bit codes as uint64 or int64 (or (n, 8) uint8), got {a.dtype}")


def as_code_rows(codes, arg: str = "codes") -> np.ndarray:
    """Normalise 64- or 256-bit codes: ``np.uint64[n]`` for 64-bit forms (as :func:`as_codes`), C-contiguous
    ``np.uint64[n, 4]`` for 256-bit forms (``uint64/int64[n, 4]`` or packed ``uint8[n, 32]``)."""
    if hasattr(codes, "__cuda_array_interface__") and not isinstance(codes, np.ndarray):
        return as_codes(codes, arg)  # the same GPU-array message
    a = np.asarray(codes)
    if a.ndim == 2 and a.dtype == np.uint8 and a.shape[1] == 32:
        return np.ascontiguousarray(a).view("<u8").astype(np.uint64, copy=False)
    if a.ndim == 2 and a.dtype in (np.uint64, np.int64) and a.shape[1] in _WORDS:
        rows = np.ascontiguousarray(a).view(np.uint64)
        return rows.reshape(-1) if rows.shape[1] == 1 else rows
    if a.ndim == 2 and a.dtype != np.uint8:
        raise ValueError(f"{arg}: multi-word codes must have shape (n, 1) or (n, 4), got {a.shape}")
    if a.ndim == 2 and a.shape[1] != 8:
        raise ValueError(f"{arg}: packed uint8 codes must have shape (n, 8) or (n, 32), got {a.shape}")
    return as_codes(a, arg)


def _words(rows: np.ndarray) -> int:
    return 1 if rows.ndim == 1 else rows.shape[1]


def _as_queries(queries, words: int) -> tuple[np.ndarray, int]:
    """Queries with the database's width: plain rows, or dihedral ``[nq, 8, W]`` (uint64/int64) /
    ``[nq, 8, 8 * W]`` (packed uint8). Returns (uint64 array as the native call takes it, variants)."""
    q = np.asarray(queries)
    if q.ndim == 3:
        if q.shape[1] != DIHEDRAL:
            raise ValueError(f"dihedral queries must have shape (nq, 8, words), got {q.shape}")
        if q.dtype == np.uint8 and q.shape[2] == 8 * words:
            flat = np.ascontiguousarray(q).view("<u8").astype(np.uint64, copy=False)
        elif q.dtype in (np.uint64, np.int64) and q.shape[2] == words:
            flat = np.ascontiguousarray(q).view(np.uint64)
        else:
            raise TypeError(
                f"dihedral queries must be uint64 (nq, 8, {words}) or uint8 (nq, 8, {8 * words}), "
                f"got {q.dtype} {q.shape}"
            )
        return flat, DIHEDRAL
    rows = as_code_rows(q, "queries")
    if _words(rows) != words:
        raise ValueError(f"queries are {64 * _words(rows)}-bit codes but the database holds {64 * words}-bit codes")
    return rows, 1


def _check_radius(max_distance, words: int) -> int:
    return check_int(max_distance, "max_distance", 0, _MAX_DISTANCE[words])


# The ops' argument check (ops._inputs); the name stays for curate.dedup, which imports it.


def hamming_distance(a, b) -> np.ndarray:
    """Elementwise Hamming distance of two code arrays (numpy broadcasting) as ``np.uint8``.

    Accepts uint64/int64 arrays or scalars of any shape (no (n, 8) byte form here: broadcasting would be
    ambiguous)."""

    def codes_of(x, name):
        x = np.asarray(x)
        if x.dtype == np.int64:
            return x.view(np.uint64)
        if x.dtype != np.uint64:
            raise TypeError(f"{name} must be uint64 or int64 codes, got {x.dtype}")
        return x

    return np.bitwise_count(codes_of(a, "a") ^ codes_of(b, "b")).astype(np.uint8, copy=False)


def hamming_pairs(
    codes, max_distance: int, device: str = "auto", num_threads: int | None = None, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``popcount(codes[i] ^ codes[j]) <= max_distance``, exactly once: 0..64 for
    64-bit codes, 0..255 for 256-bit codes (see the module doc for the layouts).

    Returns ``(pairs, distances)``: ``pairs`` is ``np.int64[m, 2]`` sorted by (i, j) and ``distances`` is
    ``np.uint8[m]``, the same on every device. Identical codes are collapsed before the join, so large
    groups of exact duplicates cost one code each (their g*(g-1)/2 pairs are still all returned).

    ``method`` (CPU only) forces the algorithm: "mih" (multi-index hashing), "brute_force", or "auto"
    (a cost model picks; see :func:`hamming_join_plan`). ``num_threads`` None means all cores.
    """
    on_gpu = hasattr(codes, "__cuda_array_interface__")
    rows = None if on_gpu else as_code_rows(codes)
    if rows is None:  # a device array: its width is checked by the CUDA entry
        r = check_int(max_distance, "max_distance", 0, 255)
    else:
        r = _check_radius(max_distance, _words(rows))
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    threads = check_threads(num_threads)
    if resolve_device(device, codes) == "cuda":
        if method != "auto":
            raise ValueError(f"method={method!r} selects a CPU algorithm; use device='cpu' with it")
        from mmcurate.ops import _cuda

        return _cuda.hamming_pairs(codes if on_gpu else rows, r)
    pairs, distances, _plan = native().hamming_pairs(rows, r, threads, method)
    return pairs, distances


def hamming_join_plan(n_unique: int, max_distance: int, method: str = "auto", bits: int = 64) -> dict:
    """The CPU self-join plan for ``n_unique`` distinct ``bits``-bit codes (64 or 256): method, substring
    widths/offsets/radii (multi-index hashing) and the cost model's single-thread time estimate. For logs
    and benchmarks."""
    if bits not in (64, 256):
        raise ValueError(f"bits must be 64 or 256, got {bits!r}")
    n = check_int(n_unique, "n_unique", 0, INT64_MAX)
    r = _check_radius(max_distance, bits // 64)
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    return dict(native().hamming_join_plan(n, r, method, bits // 64))


def hamming_range(
    codes, queries, max_distance: int, num_threads: int | None = None, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Every (query q, code j) with distance <= ``max_distance``: ``(pairs np.int64[m, 2] sorted by (q, j),
    distances np.uint8[m])``, exactly, on the CPU. ``method`` as for :func:`hamming_pairs`: multi-index hashing
    over ``codes`` (each query variant probes its substring balls; candidates are verified on the full code
    and deduplicated) or a tiled brute force, picked by the same cost model for "auto".

    ``queries`` are codes of the database's width, or dihedral queries ``[nq, 8, W]`` (``[nq, 8, 8 * W]``
    packed bytes): the 8 hashes of a query image's rotations and flips (PDQ's dihedral hashes). The variants
    are the *query* side's: a query matches code j if any of its 8 variants is within the radius, and its
    distance is the minimum over the variants. A dihedral self-join passes the codes as ``codes`` and their
    variants as ``queries``; it lists (q, q) and both (q, j) and (j, q) where each is within the radius (a
    variant of q against j and a variant of j against q are different comparisons).
    """
    db = as_code_rows(codes)
    words = _words(db)
    r = _check_radius(max_distance, words)
    q, _variants = _as_queries(queries, words)
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    pairs, distances, _plan = native().hamming_range(db, q, r, check_threads(num_threads), method)
    return pairs, distances


class HammingRangeIndex:
    """Exact radius search of many query batches against one database of 64- or 256-bit codes: the multi-index
    (or the brute-force plan, for small databases) is built once, here, and every :meth:`search` returns what
    :func:`hamming_range` of the same codes and queries would. The index keeps ``codes`` (the normalised array;
    no copy for ``uint64`` input) and reads its rows in place.

    Memory: the database plus, per multi-index substring, 4 bytes per code and 4 bytes per bucket (at most one
    bucket per code); :attr:`memory_bytes` says what the index adds, :attr:`plan` how it splits the bits.
    ``method``: "auto" (the cost model, with the build not counted: it is paid once), "mih" or "brute_force".
    """

    def __init__(self, codes, max_distance: int, num_threads: int | None = None, method: str = "auto"):
        self.codes = as_code_rows(codes)
        self.words = _words(self.codes)
        self.max_distance = _check_radius(max_distance, self.words)
        if method not in _PAIR_METHODS:
            raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
        self._index = native().HammingRangeIndex(self.codes, self.max_distance, check_threads(num_threads), method)

    def search(self, queries, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(pairs np.int64[m, 2] sorted by (q, j), distances np.uint8[m])``: every (query q, code j) within the
        index's radius; ``queries`` as for :func:`hamming_range` (plain or dihedral)."""
        q, _variants = _as_queries(queries, self.words)
        pairs, distances, _plan = self._index.search(q, check_threads(num_threads))
        return pairs, distances

    @property
    def plan(self) -> dict:
        return dict(self._index.plan)

    @property
    def memory_bytes(self) -> int:
        """Bytes the index adds to its codes (the substrings' bucket offsets and ids)."""
        return int(self._index.memory_bytes)

    def __len__(self) -> int:
        return len(self._index)


def hamming_knn(
    codes, k: int, queries=None, device: str = "auto", num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours in Hamming distance.

    Codes are 64- or 256-bit (module doc); ``queries`` may be dihedral (``[nq, 8, W]``, see
    :func:`hamming_range`; CPU only), ranking by the minimum distance over a query's variants.
    ``queries=None`` searches every code against the others (a code is never its own neighbour; an
    identical code at another index is, at distance 0). Returns ``(distances np.int32[nq, k],
    indices np.int64[nq, k])`` ordered by (distance, index) ascending, so ties go to the smaller index
    and results are deterministic. When fewer than k candidates exist (k >= len(codes) in self-search, or
    k > len(codes) with queries) the tail is padded with distance -1 and index -1, as faiss does.
    """
    k = check_int(k, "k", 1, INT32_MAX)
    threads = check_threads(num_threads)
    dihedral = queries is not None and np.ndim(queries) == 3
    if resolve_device("cpu" if dihedral and device == "auto" else device, codes) == "cuda":
        if dihedral:
            raise ValueError("dihedral queries are searched on the CPU; pass device='cpu'")
        from mmcurate.ops import _cuda

        def keep(x):
            return x if hasattr(x, "__cuda_array_interface__") else as_code_rows(x)

        return _cuda.hamming_knn(keep(codes), k, None if queries is None else keep(queries))
    db = as_code_rows(codes)
    q = None if queries is None else _as_queries(queries, _words(db))[0]
    return native().hamming_knn(db, k, q, threads)


__all__ = [
    "hamming_pairs",
    "hamming_knn",
    "hamming_range",
    "HammingRangeIndex",
    "hamming_distance",
    "hamming_join_plan",
    "as_codes",
    "as_code_rows",
    "DIHEDRAL",
]
