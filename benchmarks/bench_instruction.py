"""Conversations per second of the whole llava recipe (`mmcurate recipe llava`) on synthetic instruction data.

  python benchmarks/bench_instruction.py [--n 100000] [--images tiny|none] [--workers 1] [--global-mode memory]
                                          [--reader-shard-size 1000] [--label TEXT]
                                          [--out benchmarks/results/instruction.json]

The data: --n LLaVA-style conversations from mmcurate.instruction_sample.synthetic_records (yes/no with 75% yes,
multiple choice with a skewed letter, counting, colours, text reading, grounding, descriptions, reasoning,
dialogues, text-only, 5% planted exact and near copies), as JSONL. --images tiny: about n/3 distinct 32x32 JPEGs
(random noise: unrelated pHashes), so the image stages cost little and the figure is the text stages'; none: every
conversation text-only. Built once under --data-dir. The recipe runs in a fresh `mmcurate run` process (report
off: thumbnails are not the text stages); the figures are the run's own (its manifest): conversations/s overall
and per stage, peak RSS, and what the instruction steps did.
"""

from __future__ import annotations

import argparse
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


def build_data(data_dir: Path, n: int, images: str, seed: int = 0) -> Path:
    """data_dir/<images>_<n>/llava.jsonl (+ images/), built once."""
    import numpy as np
    from PIL import Image

    from mmcurate.instruction_sample import synthetic_records

    target = data_dir / f"{images}_{n}"
    path = target / "llava.jsonl"
    if path.exists():
        return path
    t = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    names: list[str | None] = [None]
    if images == "tiny":
        rng = np.random.default_rng(seed)
        names = [f"img/{k // 1000:03d}/{k:06d}.jpg" for k in range(max(1, n // 3))]
        for name in names:
            p = target / "images" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p, format="JPEG", quality=85)
    records = synthetic_records(n, names, seed=seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec, _ in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"built {n} conversations ({images} images) in {time.perf_counter() - t:.0f} s -> {target}")
    return path


def run_once(path: Path, out: Path, workers: int, global_mode: str, reader_shard_size: int | None = None) -> dict:
    from mmcurate.pipeline.recipe import llava_recipe_dict

    recipe = llava_recipe_dict()
    recipe["input"]["path"] = str(path)
    options = {"image_root": str(path.parent / "images")} if (path.parent / "images").is_dir() else {}
    if reader_shard_size:
        options["shard_size"] = reader_shard_size
    recipe["input"]["options"] = options
    recipe["output"]["path"] = str(out)
    recipe["output"]["report"] = False
    recipe["run"]["workers"] = workers
    recipe["run"]["global_mode"] = global_mode
    recipe_path = out.parent / f"{out.name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(recipe_path), "--overwrite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"run failed:\n{proc.stdout}\n{proc.stderr}")
    m = json.loads((out / "manifest.json").read_text())
    read = m["counts"]["read"]
    stages = [
        {k: s.get(k) for k in ("name", "kind", "in", "kept", "rejected", "seconds", "samples_per_s", "reasons")}
        for s in m["stages"]
    ]
    instruction = {
        s["name"]: {k: v for k, v in (s.get("stats") or {}).items() if k not in ("per_template", "top")}
        for s in m["stages"]
        if s["name"] in ("instruction_dedup", "answer_balance", "option_order", "template_stats", "task_mix", "split")
    }
    return {
        "conversations": read,
        "kept": m["counts"]["kept"],
        "wall_s": round(wall, 2),
        "run_s": m["run"]["duration_s"],
        "conversations_per_s": round(read / m["run"]["duration_s"], 1),
        "conversations_per_s_wall": round(read / wall, 1),
        "peak_rss_mb": m["run"].get("peak_rss_mb"),
        "timings_s": m.get("timings_s"),
        "stages": stages,
        "instruction_steps": instruction,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--images", choices=["tiny", "none"], default="tiny")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--global-mode", choices=["memory", "sharded"], default="memory")
    ap.add_argument(
        "--reader-shard-size",
        type=int,
        default=None,
        help="the LLaVA reader's entries per shard (default 1000; a map task reads and parses only its own "
        "shard's lines of the JSONL)",
    )
    ap.add_argument(
        "--label",
        default=None,
        help="a name for this run kept in its record (e.g. 'before: whole-file parse per task'); runs are replaced "
        "only by one with the same options and label",
    )
    ap.add_argument("--data-dir", default="/tmp/mmcurate_bench_instruction")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "instruction.json"))
    args = ap.parse_args()
    path = build_data(Path(args.data_dir), args.n, args.images)
    result = run_once(
        path,
        Path(args.data_dir) / f"out_{args.images}_{args.n}",
        args.workers,
        args.global_mode,
        args.reader_shard_size,
    )
    record = {
        "benchmark": "llava recipe on synthetic instruction data (benchmarks/bench_instruction.py)",
        "n": args.n,
        "images": args.images,
        "workers": args.workers,
        "global_mode": args.global_mode,
        "reader_shard_size": args.reader_shard_size or 1000,
        **({"label": args.label} if args.label else {}),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_before": os.getloadavg(),
        },
        "result": result,
    }
    out = Path(args.out)
    runs = []
    if out.exists():
        try:
            runs = [
                r
                for r in json.loads(out.read_text()).get("runs", [])
                if not (
                    r["n"] == args.n
                    and r["images"] == args.images
                    and r["workers"] == args.workers
                    and r["global_mode"] == args.global_mode
                    and r.get("reader_shard_size", 1000) == (args.reader_shard_size or 1000)
                    and r.get("label") == args.label
                )
            ]
        except (ValueError, KeyError, AttributeError):
            runs = []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": [*runs, record]}, indent=1) + "\n")
    print(
        f"{args.n} conversations ({args.images} images, {args.workers} worker(s), {args.global_mode}): "
        f"{result['conversations_per_s']:,.0f} conversations/s ({result['run_s']:.1f} s), kept {result['kept']:,}, "
        f"peak RSS {result['peak_rss_mb']} MB -> {out}"
    )
    for s in result["stages"]:
        print(f"  {s['name']:<22} {s['kind']:<6} {s['seconds']:>8.2f} s  {s['rejected']:>7,} rejected  {s['reasons']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
