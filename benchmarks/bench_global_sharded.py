"""The global phase in memory vs sharded mode on synthetic survivor shards: wall time, peak RSS, same results.

  python benchmarks/bench_global_sharded.py [--n 200000] [--shards 20] [--dim 256] [--workers 1 2]
                                            [--steps dedup|balance|split] [--out benchmarks/results/global_sharded.json]

Writes ``n`` survivors in ``shards`` metadata files as the map phase leaves them (_work/meta/NNNNN.parquet: key,
source, sha256 with 10% exact copies, pHash with 10% near copies at 0-12 bits, fp16 unit embeddings with 10%
near copies, clip_score), then runs the global steps exact_dedup, phash_dedup (keep by clip_score) and
semantic_dedup (k-means on a 50k sample) through ``run_global_phase`` (memory) and ``run_sharded_global_phase``
(sharded, workers 1 and 2: builtin map / process pool), each in its own process. ``--steps balance`` runs the
balance step alone instead (fraction 0.5, default levels [1000, 100], k-means sample 256 per cluster);
``--steps split`` runs clip_score_filter (keep_fraction 0.7) then split (8:1:1, pHash radius auto). Reports
per run: wall time, per-step seconds, the driver's peak RSS and the largest worker's, and a digest of the
rejects and duplicates (equal across runs: the modes give the same results).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import proc_status_mb

STEP_SETS = {
    "dedup": [
        ("exact_dedup", {"keep": {"max": "clip_score"}}),
        ("phash_dedup", {"keep": {"max": "clip_score"}}),
        ("semantic_dedup", {"sample_size": 50_000, "eps": 0.05}),
    ],
    "balance": [("balance", {"fraction": 0.5})],
    "split": [("clip_score_filter", {"keep_fraction": 0.7}), ("split", {})],
}
STAGES = STEP_SETS["dedup"]


def build(work: Path, n: int, n_shards: int, dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench_global_scale import _near_codes
    from bench_semantic import synthetic
    from mmcurate.stages.embeddings import embedding_array

    rng = np.random.default_rng(0)
    uniq = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n - n // 10)]
    digests = uniq + [uniq[j] for j in rng.integers(0, len(uniq), n // 10)]
    order = rng.permutation(n)  # copies spread over the shards
    codes = _near_codes(n, rng)[order]
    emb = synthetic(n, dim, dup_frac=0.1)[order]
    table = pa.table(
        {
            "key": pa.array([f"{i:010d}" for i in range(n)]),
            "source": pa.array([f"shard{i * n_shards // n:05d}" for i in range(n)]),
            "sha256": pa.array([digests[i] for i in order], pa.string()),
            "phash": pa.array(codes, pa.uint64()),
            "clip_score": pa.array(rng.random(n).astype(np.float32)),
            "image_embedding": embedding_array(emb),
        }
    )
    (work / "meta").mkdir(parents=True)
    bounds = np.linspace(0, n, n_shards + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(a, b - a), work / "meta" / f"{i:05d}.parquet")


def run_one(work: Path, n_shards: int, mode: str, workers: int) -> dict:
    from mmcurate.pipeline.executor import StagePlan
    from mmcurate.pipeline.global_phase import run_memory_global_phase, run_sharded_global_phase
    from mmcurate.pipeline.stage import registry

    plan = StagePlan.from_stages([registry.create(name, dict(p)) for name, p in STAGES])
    t = time.perf_counter()
    if mode == "memory":
        n_kept, stats, rejects, dups, _ = run_memory_global_phase(work, plan, n_shards)
    else:
        from mmcurate.pipeline.global_sharded import local_map

        with local_map(workers, max(1, (os.cpu_count() or 1) // workers)) as map_fn:
            n_kept, stats, rejects, dups, _ = run_sharded_global_phase(
                work, plan, n_shards, map_fn=map_fn, parallelism=workers
            )
    wall = time.perf_counter() - t
    digest = hashlib.sha256()
    for tbl in (rejects, dups):
        for c in tbl.columns:
            digest.update(json.dumps(c.to_pylist(), default=str).encode())
    return {
        "mode": mode,
        "workers": workers,
        "wall_s": round(wall, 2),
        "kept": n_kept,
        "steps": {
            k: {"seconds": round(v["seconds"], 2), "rejected": v["rejected"], "mode": v["mode"]}
            for k, v in stats.items()
        },
        "semantic_stream_seconds": stats.get("semantic_dedup", {}).get("stats", {}).get("sharded", {}).get("seconds"),
        "driver_peak_rss_mb": proc_status_mb("VmHWM"),
        "largest_worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "results_sha256": digest.hexdigest()[:16],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", choices=sorted(STEP_SETS), default="dedup")
    ap.add_argument("--dir", default="/tmp/mmcurate_bench_global_sharded")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "global_sharded.json"))
    args = ap.parse_args()
    global STAGES
    STAGES = STEP_SETS[args.steps]
    work = Path(args.dir) / f"n{args.n}_s{args.shards}_d{args.dim}" / "_work"
    if args.one:
        print(json.dumps(run_one(work, args.shards, args.one[0], int(args.one[1]))))
        return
    if not (work / "meta").exists():
        t = time.perf_counter()
        shutil.rmtree(work, ignore_errors=True)
        build(work, args.n, args.shards, args.dim)
        print(f"built {args.n} survivors in {time.perf_counter() - t:.1f} s", flush=True)
    rows = []
    for mode, workers in [("memory", 1)] + [("sharded", w) for w in args.workers]:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--n",
                str(args.n),
                "--shards",
                str(args.shards),
                "--dim",
                str(args.dim),
                "--dir",
                args.dir,
                "--steps",
                args.steps,
                "--one",
                mode,
                str(workers),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{mode} workers={workers} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "benchmark": "global_phase_memory_vs_sharded",
        "steps": args.steps,
        "n": args.n,
        "shards": args.shards,
        "dim": args.dim,
        "stages": [{name: p} for name, p in STAGES],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "same_results": len({r["results_sha256"] for r in rows}) == 1,
        "note": "each run its own process; driver peak RSS is its VmHWM, the largest worker's by getrusage "
        "(RUSAGE_CHILDREN); with workers=1 the tasks run in the driver. Shared 2-core machine.",
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"same results: {result['same_results']}; wrote {out}")


if __name__ == "__main__":
    main()
