"""Benchmark: exact radius self-join over 256-bit PDQ-like codes, mmcurate vs faiss IndexBinaryFlat and
IndexBinaryMultiHash, measured in the same run on the same codes.

Codes (pdq_like_codes): photos cluster, so the codes are not uniform. Each image is a latent vector; its code
is a random projection of it plus per-bit noise, thresholded at the row's median (PDQ sets exactly half the
bits). Unrelated images then share correlated bits (distance percentiles: 0.01% ~ 74, 1% ~ 94, median 128),
and dup_fraction of the codes are re-encodes of another image (its latent jittered by a random amount, so
near-duplicates spread over distances 0..40 around ~20, exact copies included).

faiss IndexBinaryFlat is a brute force of n^2 distances; IndexBinaryMultiHash(256, 16 tables of 16 bits,
nflip=1) is exact at r = 31 (16 * (1 + 1) > 31 by pigeonhole), but its buckets grow with n, so its range
search is quadratic too (measured: 33 s at 100k). Above --faiss-full-max codes both run on the same random
query subset and their times are scaled by n / queries (each query is searched independently, so the cost is
linear in the queries; index builds are not counted); our pairs restricted to those queries must equal each
index's exactly. faiss's binary range_search keeps distances strictly below its radius: a radius-r join is
r + 1 there.

Usage: python benchmarks/bench_hamming256.py [--sizes 100000 1000000] [--r 31] [--out results/hamming256.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hamming import faiss_range_keys, pair_keys_for_queries, timed
from mmcurate.ops.hamming import DIHEDRAL, hamming_join_plan, hamming_pairs, hamming_range


def pdq_like_codes(n: int, seed: int = 0, latent: int = 48, dup_fraction: float = 0.4, noise: float = 0.6):
    """uint64[n, 4] median-thresholded projections of image latents; see the module doc."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((latent, 256)).astype(np.float32)
    n_images = int(n * (1 - dup_fraction))
    z = rng.standard_normal((n_images, latent)).astype(np.float32)
    source = np.concatenate([np.arange(n_images), rng.integers(0, n_images, n - n_images)])
    jitter = np.where(np.arange(n) >= n_images, rng.uniform(0.0, 0.35, n), 0.0).astype(np.float32)
    codes = np.empty((n, 4), np.uint64)
    for s in range(0, n, 100_000):  # in blocks: the float projections of 1M codes would take 1 GB
        e = min(n, s + 100_000)
        zz = z[source[s:e]] + jitter[s:e, None] * rng.standard_normal((e - s, latent)).astype(np.float32)
        v = zz @ proj + noise * rng.standard_normal((e - s, 256)).astype(np.float32)
        bits = v > np.median(v, axis=1, keepdims=True)
        codes[s:e] = np.packbits(bits, axis=1, bitorder="little").view(np.uint64)
    return codes[rng.permutation(n)]


def bench(n: int, r: int, args, faiss, rng) -> dict:
    codes = pdq_like_codes(n, seed=args.seed)
    x = np.ascontiguousarray(codes).view(np.uint8)  # faiss's packed layout of the same bits
    n_unique = int(len(np.unique(codes, axis=0)))
    (pairs, dist), seconds = timed(hamming_pairs, codes, r, device="cpu")
    row = {
        "n": n,
        "r": r,
        "n_unique": n_unique,
        "pairs": int(len(pairs)),
        "pair_distance_histogram": np.bincount(dist, minlength=r + 1).tolist(),
        "seconds": round(seconds, 3),
        "plan": hamming_join_plan(n_unique, r, bits=256)["description"],
    }
    print(json.dumps(row), flush=True)
    if n <= args.brute_force_max:
        (bf_pairs, _), bf_seconds = timed(hamming_pairs, codes, r, device="cpu", method="brute_force")
        row["brute_force_seconds"] = round(bf_seconds, 3)
        row["brute_force_equal"] = bool(np.array_equal(bf_pairs, pairs))
    if faiss is None:
        return row

    nq = n if n <= args.faiss_full_max else min(args.faiss_queries, n)
    queries = np.arange(n) if nq == n else np.sort(rng.choice(n, nq, replace=False))
    ours = pair_keys_for_queries(pairs, queries, n)
    for name, make in (("faiss_flat", _flat), ("faiss_multihash", _multihash)):
        index, build_seconds = timed(make, faiss, x)
        want, faiss_seconds = timed(faiss_range_keys, index, x, queries, r, n)
        del index
        row[name] = {
            "index": make.__doc__,
            "build_seconds": round(build_seconds, 3),
            "queries": int(nq),
            "seconds_measured": round(faiss_seconds, 3),
            "seconds": round(faiss_seconds * n / nq, 1),  # the build is not counted
            "extrapolated": nq < n,
            "equal": bool(np.array_equal(ours, want)),
            "directed_pairs_checked": int(len(want)),
        }
        row[f"speedup_vs_{name}"] = round(row[name]["seconds"] / seconds, 1)
        print(json.dumps(row[name]), flush=True)
    return row


def bench_dihedral(n: int, nq: int, r: int, args, faiss, rng) -> dict:
    """Dihedral queries against the n codes: variant 0 of query q is code q, variants 1..7 are the codes of
    other images (stand-ins for its rotations and flips), so a match may come through any variant. faiss
    searches every variant code (8 * queries codes); its (query, code) set is the union over the variants."""
    codes = pdq_like_codes(n, seed=args.seed)
    others = pdq_like_codes(nq * (DIHEDRAL - 1), seed=args.seed + 7)
    queries = np.concatenate([codes[:nq, None], others.reshape(nq, DIHEDRAL - 1, 4)], axis=1)
    (pairs, dist), seconds = timed(hamming_range, codes, queries, r)
    row = {"n": n, "queries": nq, "variants": DIHEDRAL, "r": r, "pairs": int(len(pairs)), "seconds": round(seconds, 3)}
    if faiss is None:
        return row
    sub = min(args.faiss_queries // DIHEDRAL, nq)
    index = _flat(faiss, np.ascontiguousarray(codes).view(np.uint8))
    x = np.ascontiguousarray(queries[:sub].reshape(-1, 4)).view(np.uint8)
    (lims, _, labels), faiss_seconds = timed(index.range_search, x, r + 1)
    q = np.repeat(np.arange(len(x)) // DIHEDRAL, np.diff(lims).astype(np.int64))
    want = np.unique(q * n + labels)
    got = pairs[pairs[:, 0] < sub]
    row["faiss_flat"] = {
        "queries": int(sub),
        "seconds_measured": round(faiss_seconds, 3),
        "seconds": round(faiss_seconds * nq / sub, 1),
        "extrapolated": sub < nq,
        "equal": bool(np.array_equal(got[:, 0] * n + got[:, 1], want)),
    }
    row["speedup_vs_faiss_flat"] = round(row["faiss_flat"]["seconds"] / seconds, 1)
    return row


def _flat(faiss, x):
    """IndexBinaryFlat(256)"""
    index = faiss.IndexBinaryFlat(256)
    index.add(x)
    return index


def _multihash(faiss, x):
    """IndexBinaryMultiHash(256, nhash=16, b=16), nflip=1"""
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    index.nflip = 1
    index.add(x)
    return index


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--r", type=int, default=31)
    ap.add_argument("--faiss-full-max", type=int, default=100_000, help="largest n faiss runs every query at")
    ap.add_argument("--faiss-queries", type=int, default=20_000, help="faiss's query subset above that")
    ap.add_argument("--brute-force-max", type=int, default=100_000, help="largest n our brute force runs at")
    ap.add_argument("--dihedral-queries", type=int, default=10_000, help="dihedral queries at the largest size")
    ap.add_argument("--only", choices=["all", "join", "dihedral"], default="all", help="keep the other part's results")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "hamming256.json"))
    args = ap.parse_args(argv)

    faiss = None
    if not args.no_faiss:
        import faiss
    rng = np.random.default_rng(args.seed + 1)
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faiss": getattr(faiss, "__version__", None),
            "faiss_threads": faiss.omp_get_max_threads() if faiss else None,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # a shared machine: context
        },
        "codes": "pdq_like_codes (see the module doc), 256-bit",
        "join": [],
        "dihedral": [],
    }
    out = Path(args.out)
    if args.only != "all" and out.exists():
        previous = json.loads(out.read_text())
        results["join"], results["dihedral"] = previous.get("join", []), previous.get("dihedral", [])
    if args.only in ("all", "join"):
        results["join"] = []
        for n in args.sizes:
            row = bench(n, args.r, args, faiss, rng)
            results["join"].append(row)
            print(json.dumps(row), flush=True)
    if args.only in ("all", "dihedral"):
        row = bench_dihedral(max(args.sizes), args.dihedral_queries, args.r, args, faiss, rng)
        results["dihedral"] = [row]
        print(json.dumps(row), flush=True)

    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'n':>9} {'r':>3} {'ours s':>8} {'pairs':>9} {'flat s':>9} {'x flat':>7} {'mh s':>8} {'x mh':>6} equal")
    for row in results["join"]:
        flat, mh = row.get("faiss_flat", {}), row.get("faiss_multihash", {})
        flat_s, mh_s = (f"{f['seconds']:.1f}" + ("*" if f["extrapolated"] else "") if f else "-" for f in (flat, mh))
        print(
            f"{row['n']:>9} {row['r']:>3} {row['seconds']:>8.3f} {row['pairs']:>9} {flat_s:>9} "
            f"{row.get('speedup_vs_faiss_flat', '-'):>7} {mh_s:>8} "
            f"{row.get('speedup_vs_faiss_multihash', '-'):>6} {flat.get('equal', '-')}/{mh.get('equal', '-')}"
        )
    print("* faiss time scaled from a query subset (see faiss_flat.queries)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
