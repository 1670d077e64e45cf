"""Timing and memory helpers shared by the benchmarks."""

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


def proc_status_mb(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status in MB: ``VmHWM`` (peak RSS) or ``VmRSS`` (now). Not
    getrusage: Linux carries ru_maxrss over fork + exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")
