"""Benchmark: exact Hamming self-join and kNN over 64-bit codes, mmcurate vs faiss IndexBinaryFlat.

For each code distribution (uniform random; pHash-like = random codes plus ~5% near-duplicate variants
0..10 bits away from a random base) and radius, times mmcurate.ops.hamming_pairs over all n codes and
faiss's range search. faiss over all n queries takes minutes on a small machine, so by default it runs on
a random subset of queries and its time is extrapolated linearly to n (the search is a brute force, so
its cost is linear in the number of queries); our pairs restricted to those queries must equal faiss's
exactly. --full runs faiss on every query and compares the complete pair sets.

faiss's binary range_search keeps distances strictly below the radius it is given, so a radius-r join is
range_search(x, r + 1); the script checks that no returned distance exceeds r.

Usage: python benchmarks/bench_hamming.py [--n 1000000] [--radii 8 10] [--out benchmarks/results/hamming.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmcurate.ops.hamming import hamming_join_plan, hamming_knn, hamming_pairs


def uniform_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)


def phash_like_codes(n: int, rng: np.random.Generator, dup_fraction: float = 0.05, max_flips: int = 10):
    """Random codes where dup_fraction of them are replaced by variants of another code with 0..max_flips
    bits flipped (re-encodes, crops and resizes of the same image land within a few bits in pHash)."""
    codes = uniform_codes(n, rng)
    nd = int(n * dup_fraction)
    dst = rng.choice(n, nd, replace=False)
    src = rng.integers(0, n, nd)
    flips = rng.integers(0, max_flips + 1, nd)
    rank = np.argsort(np.argsort(rng.random((nd, 64)), axis=1), axis=1)  # a random bit order per variant
    chosen = rank < flips[:, None]
    masks = (chosen.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    codes[dst] = codes[src] ^ masks
    return codes


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def pair_keys_for_queries(pairs: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """Our unordered pairs as directed (query, neighbour) keys q * n + j, for the queries only."""
    is_query = np.zeros(n, bool)
    is_query[queries] = True
    i, j = pairs[:, 0], pairs[:, 1]
    keys = np.concatenate([i[is_query[i]] * n + j[is_query[i]], j[is_query[j]] * n + i[is_query[j]]])
    return np.sort(keys)


def faiss_range_keys(index, x: np.ndarray, queries: np.ndarray, r: int, n: int):
    lims, dist, ids = index.range_search(x[queries], r + 1)  # strict: distance < r + 1
    if len(dist) and dist.max() > r:
        raise AssertionError(f"faiss range_search returned distance {dist.max()} > {r}: semantics changed")
    q = np.repeat(queries.astype(np.int64), np.diff(lims).astype(np.int64))
    keep = ids != q  # faiss reports each query as its own neighbour
    return np.sort(q[keep] * n + ids[keep])


def bench_join(name, codes, r, faiss_index, x, args, rng):
    n = len(codes)
    (pairs, distances), seconds = timed(hamming_pairs, codes, r, device="cpu")
    row = {
        "distribution": name,
        "n": n,
        "r": r,
        "seconds": round(seconds, 4),
        "pairs": int(len(pairs)),
        "n_unique": int(len(np.unique(codes))),
        "plan": hamming_join_plan(int(len(np.unique(codes))), r)["description"],
    }
    if faiss_index is None:
        return row
    nq = n if args.full else min(args.faiss_queries, n)
    queries = np.arange(n) if args.full else np.sort(rng.choice(n, nq, replace=False))
    want, faiss_seconds = timed(faiss_range_keys, faiss_index, x, queries, r, n)
    got = pair_keys_for_queries(pairs, queries, n)
    row.update(
        {
            "faiss_queries": int(nq),
            "faiss_seconds_measured": round(faiss_seconds, 4),
            "faiss_seconds": round(faiss_seconds * n / nq, 2),
            "faiss_extrapolated": not args.full,
            "faiss_equal": bool(np.array_equal(got, want)),
            "faiss_directed_pairs_checked": int(len(want)),
        }
    )
    row["speedup_vs_faiss"] = round(row["faiss_seconds"] / seconds, 1)
    return row


def bench_knn(name, codes, k, nq, faiss_index, x, rng):
    queries = np.sort(rng.choice(len(codes), nq, replace=False))
    (dist, idx), seconds = timed(hamming_knn, codes, k, queries=codes[queries], device="cpu")
    row = {"distribution": name, "n": len(codes), "queries": nq, "k": k, "seconds": round(seconds, 4)}
    if faiss_index is not None:
        (fd, fi), faiss_seconds = timed(faiss_index.search, x[queries], k)
        row.update(
            {
                "faiss_seconds": round(faiss_seconds, 4),
                "speedup_vs_faiss": round(faiss_seconds / seconds, 2),
                "faiss_distances_equal": bool(np.array_equal(fd, dist)),
                # faiss does not promise an order among equal distances; ours is (distance, index)
                "faiss_indices_equal_fraction": float((fi == idx).mean()),
            }
        )
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--radii", type=int, nargs="+", default=[8, 10])
    ap.add_argument("--faiss-queries", type=int, default=20_000, help="query subset for faiss range search")
    ap.add_argument("--full", action="store_true", help="run faiss range search on all n queries")
    ap.add_argument("--knn-queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "hamming.json"))
    args = ap.parse_args(argv)

    faiss = None
    if not args.no_faiss:
        import faiss

    rng = np.random.default_rng(args.seed)
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faiss": getattr(faiss, "__version__", None),
            "faiss_threads": faiss.omp_get_max_threads() if faiss else None,
        },
        "join": [],
        "knn": [],
    }
    for name, make in [("uniform", uniform_codes), ("phash_like", phash_like_codes)]:
        codes = make(args.n, rng)
        x = codes.view(np.uint8).reshape(-1, 8)  # faiss's packed layout of the same bits
        index = None
        if faiss is not None:
            index = faiss.IndexBinaryFlat(64)
            index.add(x)
        for r in args.radii:
            row = bench_join(name, codes, r, index, x, args, rng)
            results["join"].append(row)
            print(json.dumps(row), flush=True)
        row = bench_knn(name, codes, args.k, min(args.knn_queries, args.n), index, x, rng)
        results["knn"].append(row)
        print(json.dumps(row), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{'join':<11} {'n':>9} {'r':>3} {'ours s':>8} {'pairs':>9} {'faiss s':>9} {'speedup':>8} {'equal':>6}")
    for row in results["join"]:
        faiss_s = (
            f"{row['faiss_seconds']:.1f}" + ("*" if row.get("faiss_extrapolated") else "")
            if "faiss_seconds" in row
            else "-"
        )
        print(
            f"{row['distribution']:<11} {row['n']:>9} {row['r']:>3} {row['seconds']:>8.3f} {row['pairs']:>9} "
            f"{faiss_s:>9} {row.get('speedup_vs_faiss', '-'):>8} {str(row.get('faiss_equal', '-')):>6}"
        )
    print(f"\n{'knn':<11} {'n':>9} {'nq':>6} {'k':>3} {'ours s':>8} {'faiss s':>9} {'speedup':>8} {'dist eq':>7}")
    for row in results["knn"]:
        print(
            f"{row['distribution']:<11} {row['n']:>9} {row['queries']:>6} {row['k']:>3} {row['seconds']:>8.3f} "
            f"{row.get('faiss_seconds', '-'):>9} {row.get('speedup_vs_faiss', '-'):>8} "
            f"{str(row.get('faiss_distances_equal', '-')):>7}"
        )
    print("* faiss time extrapolated linearly from a query subset (see faiss_queries)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
