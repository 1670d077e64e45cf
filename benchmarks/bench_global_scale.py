"""The global steps at 10k / 100k / 1M synthetic samples: wall time and peak memory per step, one process each.

  python benchmarks/bench_global_scale.py [--sizes 10000 100000 1000000] [--steps exact_dedup phash_dedup ...]
                                          [--out benchmarks/results/global_scale.json]

Each (step, n) runs in its own Python process, so its peak RSS is its own: the process builds the Arrow table of
survivors memory mode's global context would hold for the step (key, source and the step's columns, as the map
phase leaves them), records the RSS, runs the step over it (``run_on_table``) and records the time and the new
peak. Inputs, with 10% planted duplicates each:
  exact_dedup     sha256 hex digests
  phash_dedup     64-bit pHashes (near copies at 0-12 flipped bits), default radius 10, star linkage
  semantic_dedup  fp16 unit embeddings, d=512, clustered (benchmarks/bench_semantic.py's generator)
  balance         the same embeddings, fraction 0.5, levels (1000, 100)
  split           8:1:1 with pHash grouping (radius 16) and stratified by a 100-way cluster column
The fit (a power law in n for time, bytes per sample for memory) feeds docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = {
    "exact_dedup": {},
    "phash_dedup": {},
    "semantic_dedup": {},
    "balance": {"fraction": 0.5},
    "split": {"stratify_by": "semantic_cluster"},
}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _near_codes(n: int, rng) -> np.ndarray:
    n_dup = n // 10
    base = rng.integers(0, np.iinfo(np.int64).max, n - n_dup, dtype=np.int64).view(np.uint64)
    copies = base[rng.integers(0, base.size, n_dup)].copy()
    n_flips = rng.integers(0, 13, n_dup)
    for k in range(1, 13):
        sel = np.flatnonzero(n_flips >= k)
        copies[sel] ^= np.uint64(1) << rng.integers(0, 64, sel.size).astype(np.uint64)
    return np.concatenate([base, copies])


def build_table(step: str, n: int):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    cols = {"key": pa.array([f"{i:010d}" for i in range(n)]), "source": pa.array(["shard"] * n)}
    if step == "exact_dedup":
        import hashlib

        uniq = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n - n // 10)]
        uniq += [uniq[j] for j in rng.integers(0, len(uniq), n // 10)]
        cols["sha256"] = pa.array(uniq, pa.string())
    elif step in ("phash_dedup", "split"):
        cols["phash"] = pa.array(_near_codes(n, rng), pa.uint64())
        if step == "split":
            cols["semantic_cluster"] = pa.array(rng.integers(0, 100, n).astype(np.int32), pa.int32())
    else:
        from bench_semantic import synthetic
        from mmcurate.stages.embeddings import embedding_array

        cols["image_embedding"] = embedding_array(synthetic(n, 512, dup_frac=0.1))
    return pa.table(cols)


def run_one(step: str, n: int) -> dict:
    from mmcurate.pipeline.stage import registry

    try:
        from mmcurate.pipeline.global_phase import run_on_table
    except ImportError:  # run against a checkout from before the global context (PYTHONPATH=old tree)

        def run_on_table(stage, table):
            return stage.run(table)

    t = time.perf_counter()
    table = build_table(step, n)
    build_s = time.perf_counter() - t
    stage = registry.create(step, dict(STEPS[step]))
    before = _rss_mb()
    peak_before = _peak_mb()
    t = time.perf_counter()
    res = run_on_table(stage, table)
    seconds = time.perf_counter() - t
    peak = _peak_mb()
    return {
        "step": step,
        "n": n,
        "seconds": round(seconds, 3),
        "build_input_s": round(build_s, 2),
        "input_rss_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "step_extra_peak_mb": round(max(peak - max(before, 0.0), 0.0), 1),
        "peak_before_run_mb": round(peak_before, 1),
        "input_table_mb": round(table.nbytes / 2**20, 1),
        "rejected": res.rejected.num_rows,
        "duplicates": res.duplicates.num_rows,
    }


def fit(rows: list[dict]) -> dict:
    """Per step: the power law seconds = c * n^alpha fitted on log-log (alpha 1 = linear), its largest
    relative error over the sizes, the cost per sample at the largest n, and the memory per sample (the
    peak's growth between the smallest and largest n)."""
    out = {}
    for step in sorted({r["step"] for r in rows}):
        rs = sorted((r for r in rows if r["step"] == step), key=lambda r: r["n"])
        if len(rs) < 2:
            continue
        n = np.array([r["n"] for r in rs], float)
        t = np.maximum(np.array([r["seconds"] for r in rs], float), 1e-6)
        alpha, logc = np.polyfit(np.log(n), np.log(t), 1)
        pred = np.exp(logc) * n**alpha
        out[step] = {
            "time_exponent": round(float(alpha), 3),
            "time_fit_max_rel_err": round(float(np.max(np.abs(pred - t) / t)), 3),
            "us_per_sample_at_max_n": round(float(t[-1] / n[-1] * 1e6), 3),
            "bytes_per_sample": round(
                float((rs[-1]["peak_rss_mb"] - rs[0]["peak_rss_mb"]) * 2**20 / (n[-1] - n[0])), 1
            ),
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[10000, 100000, 1000000])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--one", nargs=2, metavar=("STEP", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "global_scale.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    rows = []
    for step in args.steps:
        for n in args.sizes:
            proc = subprocess.run([sys.executable, __file__, "--one", step, str(n)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{step} n={n} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    import faiss

    result = {
        "benchmark": "global_steps_scale",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "faiss": faiss.__version__},
        "note": "each row is its own process; peak_rss_mb includes the input table the executor would hold",
        "results": rows,
        "fit": fit(rows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["fit"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
