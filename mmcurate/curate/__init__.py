"""Pure array/text algorithms with no pipeline knowledge (filters, dedup grouping, PII, captions,
semantic dedup, leakage-free splits, semantic-balance sampling).

The semantic functions are exported lazily so that importing this package loads neither faiss nor torch.
"""

_LAZY = {
    "semantic_dedup": "semantic",
    "SemDedupResult": "semantic",
    "assign_splits": "splits",
    "union_groups": "splits",
    "balanced_sample": "balance",
    "cluster_balance_stats": "balance",
    # scale-out: the same results computed over shards, with per-shard / per-partition tasks
    "semantic_dedup_streaming": "semantic_stream",
    "EmbeddingShard": "semantic_stream",
    "partitioned_hamming_pairs": "hamming_partition",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
