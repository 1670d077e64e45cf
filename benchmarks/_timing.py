"""Timing helper shared by the benchmarks."""

import time


def best_rate(fn, n_items: int, repeats: int) -> float:
    """Items per second of the best of `repeats` timed calls, after one warm-up call (caches, lazy imports,
    first-touch allocations)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best
