"""The template rule (curate.local_detail) as a native kernel against its NumPy statement, on the labelled set's
stored detail grids (GitHub issue 16; benchmarks/README.md, "A cluster of template variants").

The rule runs for every verified PDQ link and, in a cluster of template variants whose members refuse one another,
for every pair the cluster forms. Pairs: every pair of the labelled set (benchmarks/near_dup_set.py) within 22 PDQ
or 10 pHash bits (the links the rule sees), then random pairs of its images (a cluster's pairs), each under a random
dihedral transform; the decisions must be equal. Timed: the NumPy rule, the kernel on one thread and on all
cores, medians of --repeats in one run.

Usage: python benchmarks/bench_template_rule.py [--pairs 200000] [--repeats 5]
Writes benchmarks/results/template_rule.json.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pdq_dedup_defaults import stored_pdq_columns
from mmcurate.curate import local_detail
from near_dup_set import build_near_dup_set


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "template_rule.json"))
    args = ap.parse_args()
    recs = build_near_dup_set(n_bases=400, seed=0)
    pdq, ph, _, grids = stored_pdq_columns(recs)
    n = len(recs)
    i, j = np.triu_indices(n, 1)
    near = (np.bitwise_count(pdq[i] ^ pdq[j]).sum(1) <= 22) | (np.bitwise_count(ph[i] ^ ph[j]) <= 10)
    rng = np.random.default_rng(0)
    extra = max(0, args.pairs - int(near.sum()))
    a = np.concatenate([i[near], rng.integers(0, n, extra)])
    b = np.concatenate([j[near], rng.integers(0, n, extra)])
    t = rng.integers(0, 8, len(a))
    ga, gb = grids[a], grids[b]
    want = local_detail.template_pairs_reference(ga, gb, t)
    got = local_detail.template_pairs(ga, gb, t)
    numpy_s = _median_s(lambda: local_detail.template_pairs_reference(ga, gb, t), args.repeats)
    one_s = _median_s(lambda: local_detail.template_pairs(ga, gb, t, num_threads=1), args.repeats)
    all_s = _median_s(lambda: local_detail.template_pairs(ga, gb, t), args.repeats)
    m = len(a)
    result = {
        "benchmark": "template_rule",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "pairs": m,
        "linked_pairs_of_the_set": int(near.sum()),
        "templates": int(want.sum()),
        "decisions_equal": bool(np.array_equal(got, want)),
        "us_per_pair": {
            "numpy": round(1e6 * numpy_s / m, 3),
            "native_1_thread": round(1e6 * one_s / m, 3),
            "native_all_cores": round(1e6 * all_s / m, 3),
        },
        "speedup_vs_numpy": {
            "native_1_thread": round(numpy_s / one_s, 1),
            "native_all_cores": round(numpy_s / all_s, 1),
        },
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
