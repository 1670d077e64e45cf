"""FAISS wrappers: k-means, nearest-centroid assignment, kNN and range search on CPU or GPU.

Every function takes ``device="auto"|"cpu"|"cuda"``, resolved at call time: "cuda" means a faiss build
with GPUs (``faiss.get_num_gpus() > 0``; faiss-gpu and faiss-cpu install the same ``faiss`` module, so
only one is ever required). Where faiss-GPU has hard limits (k or nprobe > 2048, range search) the call
runs on the CPU and emits a :class:`GpuFallbackWarning`. Layout everywhere: row-major float32 ``[n, d]``.
"""

from .faiss_index import (
    GPU_MAX_SELECTION_K,
    GpuFallbackWarning,
    KnnResult,
    assign,
    default_ivf_params,
    kmeans,
    knn,
    range_search,
    resolve_device,
)

__all__ = [
    "GPU_MAX_SELECTION_K",
    "GpuFallbackWarning",
    "KnnResult",
    "assign",
    "default_ivf_params",
    "kmeans",
    "knn",
    "range_search",
    "resolve_device",
]
