"""End-to-end throughput and peak memory of the default CPU recipe.

  python benchmarks/bench_pipeline.py [--sizes 10000 100000] [--workers 1] [--out benchmarks/results/pipeline.json]

For each size: builds the demo dataset grown to N samples (img2dataset-style WebDataset shards of
real photos, their near/exact duplicates, broken files and generated distinct images; cached under
--data-dir), runs `mmcurate run` with the default recipe in a fresh process, and records samples/s,
per-stage seconds and the peak RSS (the run's own figure from its manifest), so memory growth with
dataset size is visible.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_dataset(data_dir: Path, n: int, shard_size: int) -> Path:
    from mmcurate.io.demo_dataset import build_demo_dataset

    target = data_dir / f"demo_{n}"
    if not (target / "truth.jsonl").exists():
        t = time.perf_counter()
        build_demo_dataset(target, n_samples=n, shard_size=shard_size, seed=0)
        print(f"built {n} samples in {time.perf_counter() - t:.0f} s -> {target}")
    return target


def run_once(data: Path, out: Path, workers: int) -> dict:
    from mmcurate.pipeline.recipe import default_recipe_dict

    recipe = default_recipe_dict()
    recipe["input"]["path"] = str(data)
    recipe["output"]["path"] = str(out)
    recipe["run"]["workers"] = workers
    recipe_path = out.parent / f"{out.name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(recipe_path), "--overwrite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"run failed:\n{proc.stdout}\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    return {
        "samples": c["read"],
        "kept": c["kept"],
        "rejected": c["rejected"],
        "accounting_ok": c["accounting_ok"],
        "wall_s": round(wall, 2),
        "samples_per_s": round(c["read"] / wall, 1),
        "peak_rss_mb": manifest["run"]["peak_rss_mb"],
        "timings_s": manifest["timings_s"],
        "stages": [
            {k: s[k] for k in ("name", "kind", "in", "kept", "rejected", "seconds", "samples_per_s")}
            for s in manifest["stages"]
        ],
        "summary": proc.stdout,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--data-dir", default="/tmp/mmcurate_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    args = ap.parse_args(argv)
    import mmcurate

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "pipeline_default_recipe_cpu",
        "workers": args.workers,
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "build_info": mmcurate.build_info(),
        "runs": [],
    }
    for n in args.sizes:
        data = build_dataset(data_dir, n, args.shard_size)
        r = run_once(data, data_dir / f"out_{n}", args.workers)
        results["runs"].append(r)
        print(f"\n== {n} samples: {r['samples_per_s']} samples/s, wall {r['wall_s']} s, peak RSS {r['peak_rss_mb']}")
        print(r["summary"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
