"""Local vs Ray executor on the same input: wall time and whether the outputs are byte-identical.

  python benchmarks/bench_ray_executor.py [--size 5000] [--shard-size 500] [--out benchmarks/results/ray_executor.json]

Builds the demo dataset grown to --size samples (cached under --data-dir), then runs the default recipe
(plus a split stage) with `mmcurate run` in fresh processes: the local executor with 1 and with N worker
processes, and `--executor ray` (a local Ray instance started by the run: its start-up is in the wall time,
and reported apart from the run's own duration). Every output file except manifest.json and report.html
(timings) is compared byte for byte with the local run's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TIMED_FILES = {"manifest.json", "report.html"}


def build_dataset(data_dir: Path, n: int, shard_size: int) -> Path:
    from mmcurate.io.demo_dataset import build_demo_dataset

    target = data_dir / f"demo_{n}_{shard_size}"
    if not (target / "truth.jsonl").exists():
        build_demo_dataset(target, n_samples=n, shard_size=shard_size, seed=0)
    return target


def digests(out: Path) -> dict:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in TIMED_FILES
    }


def run(data: Path, out: Path, *flags: str, workers: int = 1) -> dict:
    from mmcurate.pipeline.recipe import default_recipe_dict

    recipe = default_recipe_dict()
    recipe["input"]["path"] = str(data)
    recipe["output"]["path"] = str(out)
    recipe["run"]["workers"] = workers
    recipe["stages"].append({"split": {"ratios": [0.8, 0.1, 0.1]}})
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(path), "--overwrite", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"run failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    m = json.loads((out / "manifest.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "run_duration_s": m["run"]["duration_s"],
        "timings_s": m["timings_s"],
        "counts": m["counts"],
        "executor": m["run"].get("executor"),
        "samples_per_s": round(m["counts"]["read"] / wall, 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes of the local run")
    ap.add_argument("--data-dir", default="/tmp/mmcurate_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_executor.json"))
    args = ap.parse_args(argv)
    import ray

    data_dir = Path(args.data_dir)
    data = build_dataset(data_dir, args.size, args.shard_size)
    runs = {"local_1": run(data, data_dir / "out_local_1")}
    if args.workers > 1:
        runs[f"local_{args.workers}"] = run(data, data_dir / f"out_local_{args.workers}", workers=args.workers)
    runs["ray"] = run(data, data_dir / "out_ray", "--executor", "ray")
    reference = digests(data_dir / "out_local_1")
    for name, r in runs.items():
        out = data_dir / f"out_{name}"
        r["identical_to_local_1"] = digests(out) == reference
        print(
            f"{name:>10}: wall {r['wall_s']:6.2f} s (run {r['run_duration_s']:.2f} s), "
            f"{r['samples_per_s']:7.1f} samples/s, identical outputs: {r['identical_to_local_1']}, "
            f"map {r['timings_s']['map']:.2f} s"
        )
    results = {
        "benchmark": "local_vs_ray_executor",
        "size": args.size,
        "shard_size": args.shard_size,
        "files_compared": len(reference),
        "ray_version": ray.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
