"""Exact Hamming search over 64-bit codes (perceptual hashes): radius self-join, top-k, distances.

Codes are accepted as
  * ``np.uint64[n]`` (the canonical form),
  * ``np.int64[n]`` (reinterpreted bit for bit, so codes >= 2**63 survive a trip through signed storage),
  * ``np.uint8[n, 8]`` rows of packed bytes, as faiss ``IndexBinary*`` stores 64-bit codes: each row is read
    as one little-endian uint64 (``row.view('<u8')``), i.e. byte b holds bits 8b..8b+7. Hamming distance
    does not depend on which bit goes where, so any consistent packing (imagehash's big-endian hex
    included) yields the same pairs and neighbours.
Anything else (floats, other integer widths, object arrays) raises ``TypeError``.
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import INT32_MAX, INT64_MAX, check_int, check_threads

_PAIR_METHODS = ("auto", "mih", "brute_force")


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
    """All pairs ``i < j`` with ``popcount(codes[i] ^ codes[j]) <= max_distance`` (0..64), exactly once.

    Returns ``(pairs, distances)``: ``pairs`` is ``np.int64[m, 2]`` sorted by (i, j) and ``distances`` is
    ``np.uint8[m]``, the same on every device. Identical codes are collapsed before the join, so large
    groups of exact duplicates cost one code each (their g*(g-1)/2 pairs are still all returned).

    ``method`` (CPU only) forces the algorithm: "mih" (multi-index hashing), "brute_force", or "auto"
    (a cost model picks; see :func:`hamming_join_plan`). ``num_threads`` None means all cores.
    """
    r = check_int(max_distance, "max_distance", 0, 64)
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    threads = check_threads(num_threads)
    if resolve_device(device, codes) == "cuda":
        if method != "auto":
            raise ValueError(f"method={method!r} selects a CPU algorithm; use device='cpu' with it")
        from mmcurate.ops import _cuda

        return _cuda.hamming_pairs(codes if hasattr(codes, "__cuda_array_interface__") else as_codes(codes), r)
    pairs, distances, _plan = native().hamming_pairs(as_codes(codes), r, threads, method)
    return pairs, distances


def hamming_join_plan(n_unique: int, max_distance: int, method: str = "auto") -> dict:
    """The CPU self-join plan for ``n_unique`` distinct codes: method, substring widths/offsets/radii
    (multi-index hashing) and the cost model's single-thread time estimate. For logs and benchmarks."""
    n = check_int(n_unique, "n_unique", 0, INT64_MAX)
    r = check_int(max_distance, "max_distance", 0, 64)
    if method not in _PAIR_METHODS:
        raise ValueError(f"method must be one of {_PAIR_METHODS}, got {method!r}")
    return dict(native().hamming_join_plan(n, r, method))


def hamming_knn(
    codes, k: int, queries=None, device: str = "auto", num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours in Hamming distance.

    ``queries=None`` searches every code against the others (a code is never its own neighbour; an
    identical code at another index is, at distance 0). Returns ``(distances np.int32[nq, k],
    indices np.int64[nq, k])`` ordered by (distance, index) ascending, so ties go to the smaller index
    and results are deterministic. When fewer than k candidates exist (k >= len(codes) in self-search, or
    k > len(codes) with queries) the tail is padded with distance -1 and index -1, as faiss does.
    """
    k = check_int(k, "k", 1, INT32_MAX)
    threads = check_threads(num_threads)
    if resolve_device(device, codes) == "cuda":
        from mmcurate.ops import _cuda

        def keep(x):
            return x if hasattr(x, "__cuda_array_interface__") else as_codes(x)

        return _cuda.hamming_knn(keep(codes), k, None if queries is None else keep(queries))
    db = as_codes(codes)
    q = None if queries is None else as_codes(queries, "queries")
    return native().hamming_knn(db, k, q, threads)


__all__ = ["hamming_pairs", "hamming_knn", "hamming_distance", "hamming_join_plan", "as_codes"]
