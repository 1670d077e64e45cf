"""splitmix64's finaliser: the one integer mix behind every deterministic routing and sampling hash (partition
routing, id hashes for samples, value hashes for shuffles), the same in every process and on every machine."""

from __future__ import annotations

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: splitmix64's increment


def mix64(z: np.ndarray) -> np.ndarray:
    """A bijection on uint64 arrays (numpy's uint64 arithmetic wraps)."""
    z = np.asarray(z, np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
