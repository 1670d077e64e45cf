"""A threshold change after clip_embed, re-run with and without reuse of the stored columns (pipeline.reuse).

  python benchmarks/bench_reuse.py [--n 500] [--model ViT-B-32] [--workers 1] [--out benchmarks/results/reuse.json]

1. `first`: the default recipe plus clip_embed (the model with random weights, on the CPU: the cost of an embedding
   pass is the same as with real weights) over the demo dataset grown to --n samples; its output stores the sizes,
   hashes, embeddings and CLIP scores.
2. A stricter recipe (clip_score_filter at the median score of `first`, phash_dedup at radius 8), over the samples
   `first` kept, twice, each in a fresh `mmcurate run` process, alternating, --repeat times:
   - `reuse`: `--from first/` (input.format mmcurate): the steps whose stored columns match are not recomputed;
   - `recompute` (the peer): the same samples read as plain WebDataset shards (`first/shards`): everything again.
   Both must keep the same samples with the same scores (checked). The figures are whole-process wall times and the
   runs' own stage seconds (their manifests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(input_path: str, fmt: str, out: Path, model: str, threshold: float | None, radius: int, workers: int):
    from mmcurate.pipeline.recipe import default_recipe_dict

    r = default_recipe_dict()
    r["input"] = {"path": input_path, "format": fmt}
    r["output"] = {"path": str(out), "shard_size": 1000, "report": False}
    r["run"]["workers"] = workers
    r["stages"] = [s if "phash_dedup" not in s else {"phash_dedup": {"max_distance": radius}} for s in r["stages"]]
    r["stages"].append({"clip_embed": {"model": model, "weights": "random", "device": "cpu"}})
    if threshold is not None:
        r["stages"].append({"clip_score_filter": {"threshold": threshold}})
    return r


def run(r: dict, path: Path) -> tuple[float, dict]:
    path.write_text(yaml.safe_dump(r))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(path), "--overwrite"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return wall, json.loads((Path(r["output"]["path"]) / "manifest.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--work-dir", default="/tmp/mmcurate_bench_reuse")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/reuse.json"))
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq

    from mmcurate.io.demo_dataset import build_demo_dataset

    work = Path(args.work_dir)
    data = work / f"input_{args.n}"
    if not (data / "truth.jsonl").exists():
        build_demo_dataset(data, n_samples=args.n, shard_size=250, seed=0)
    first = work / "first"
    wall_first, m_first = run(recipe(str(data), "auto", first, args.model, None, 10, args.workers), work / "first.yaml")
    scores = pq.read_table(first / "samples.parquet", columns=["clip_score"]).column("clip_score").to_pylist()
    threshold = float(statistics.median(s for s in scores if s is not None))

    variants = {
        "reuse": recipe(str(first), "mmcurate", work / "reuse", args.model, threshold, 8, args.workers),
        "recompute": recipe(
            str(first / "shards"), "webdataset", work / "recompute", args.model, threshold, 8, args.workers
        ),
    }
    walls: dict[str, list[float]] = {k: [] for k in variants}
    manifests: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, r in variants.items():
            wall, manifests[name] = run(r, work / f"{name}.yaml")
            walls[name].append(round(wall, 2))

    kept = {k: pq.read_table(work / k / "samples.parquet", columns=["key", "clip_score"]).to_pylist() for k in variants}
    assert [r["key"] for r in kept["reuse"]] == [r["key"] for r in kept["recompute"]], "different samples kept"
    diff = max((abs(a["clip_score"] - b["clip_score"]) for a, b in zip(kept["reuse"], kept["recompute"])), default=0.0)

    def stage_seconds(m):
        return {s["name"]: s["seconds"] for s in m["stages"]}

    result = {
        "benchmark": "threshold change after clip_embed: --from (reuse) vs the same samples recomputed",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "n_input": args.n,
        "model": f"{args.model} (random weights, CPU)",
        "first_run": {
            "wall_s": round(wall_first, 2),
            "kept": m_first["counts"]["kept"],
            "clip_embed_s": stage_seconds(m_first).get("clip_embed"),
        },
        "rerun_input_samples": m_first["counts"]["kept"],
        "threshold": threshold,
        "wall_s": walls,
        "median_wall_s": {k: statistics.median(v) for k, v in walls.items()},
        "speedup_median": round(statistics.median(walls["recompute"]) / statistics.median(walls["reuse"]), 2),
        "stage_seconds": {k: stage_seconds(m) for k, m in manifests.items()},
        "reused_rows": {s["name"]: s["reused"] for s in manifests["reuse"]["stages"] if s.get("reused")},
        "kept": {k: len(v) for k, v in kept.items()},
        "max_clip_score_difference": diff,
        "command": "python benchmarks/bench_reuse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
