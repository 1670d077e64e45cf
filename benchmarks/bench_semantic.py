"""Semantic dedup and k-means time vs n, and ours vs the SemDeDup reference algorithm in plain torch.

Synthetic d=512 unit embeddings (clustered, with planted near-duplicates at a spread of distances). The
reference (as in the SemDeDup repo): per cluster, full cosine matrix by torch.mm, triu(diagonal=1),
max over dim 0, duplicate iff >= 1 - eps; run on the same clusters and keep order as ours, and the
duplicate sets are checked equal. JSON to benchmarks/results/semantic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def synthetic(n: int, d: int = 512, dup_frac: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_frac)
    n_base = n - n_dup
    centers = rng.standard_normal((max(10, n // 2000), d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    x[:n_base] = centers[rng.integers(0, len(centers), n_base)] * 0.15 + rng.standard_normal((n_base, d), np.float32)
    x[:n_base] /= np.linalg.norm(x[:n_base], axis=1, keepdims=True)
    src = rng.integers(0, n_base, n_dup)
    scale = rng.uniform(0.0, 0.5, n_dup).astype(np.float32)[:, None] / np.sqrt(d)
    x[n_base:] = x[src] + scale * rng.standard_normal((n_dup, d), dtype=np.float32)
    x[n_base:] /= np.linalg.norm(x[n_base:], axis=1, keepdims=True)
    return x


def reference_torch(x: np.ndarray, order: np.ndarray, labels: np.ndarray, k: int, eps: float):
    import torch

    keep = np.ones(len(x), bool)
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    for c in range(k):
        m = order[bounds[c] : bounds[c + 1]]
        if m.size < 2:
            continue
        e = torch.from_numpy(x[m])
        sim = torch.mm(e, e.T)
        triu = torch.triu(sim, diagonal=1)
        M = torch.max(triu, dim=0)[0].numpy()
        keep[m[M >= 1 - eps]] = False
    return keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--points-per-cluster", type=int, default=1000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "semantic.json"))
    args = ap.parse_args()
    import faiss
    import torch

    from mmcurate import index as mindex
    from mmcurate.curate.semantic import keep_order, semantic_dedup

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        x = synthetic(n)
        k = max(10, n // args.points_per_cluster)
        t0 = time.perf_counter()
        centroids, labels = mindex.kmeans(x, k, niter=20, spherical=True, seed=0, device="auto")
        t_kmeans = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = semantic_dedup(x, eps=args.eps, keep="hard", device="auto", clusters=(centroids, labels))
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = keep_order(x, labels, r.centroids, keep="hard")
        ref_keep = reference_torch(x, order, labels, k, args.eps)
        t_ref = time.perf_counter() - t0
        row = {
            "n": n,
            "d": x.shape[1],
            "n_clusters": k,
            "eps": args.eps,
            "largest_cluster": int(np.bincount(labels).max()),
            "kmeans_s": round(t_kmeans, 3),
            "dedup_ours_s": round(t_ours, 3),
            "dedup_reference_torch_s": round(t_ref, 3),
            "speedup": round(t_ref / t_ours, 2),
            "n_duplicates": r.n_duplicates,
            "same_duplicates": bool(np.array_equal(ref_keep, r.keep)),
            "n_disagree": int(np.count_nonzero(ref_keep != r.keep)),
            # float32 GEMMs from two BLAS libraries differ in the last bits: any disagreement must sit
            # at the threshold (this is the largest |max cosine - (1 - eps)| among them)
            "disagree_max_margin": float(
                np.max(np.abs(r.max_similarity[ref_keep != r.keep] - (1 - args.eps)), initial=0.0)
            ),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "note": "times in seconds; dedup_* exclude k-means (same clusters given to both); the reference "
        "is SemDeDup's per-cluster torch.mm + triu + max, keep order computed by the same function",
        "results": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
