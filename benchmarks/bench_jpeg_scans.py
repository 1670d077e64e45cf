"""Benchmark: progressive JPEG scan floods (tests/hostile/builders_images.py) through the CPU decoder.

A scan flood repeats a progressive AC scan thousands of times; each repeat costs a pass over every block
of the image for a few dozen bytes. For each hostile file, times decode_images(mode="RGB") and
phash_bytes(exact=False) (what the integrity stage runs), each in a subprocess killed after --timeout
seconds (a libjpeg decode cannot be interrupted), recorded as ">TIMEOUT s".

The package under test is the one Python imports: run once with the old build on PYTHONPATH as
`--label before` and once with the current build as `--label after`; results merge into --out.

Usage: python benchmarks/bench_jpeg_scans.py --label after [--timeout 120] [--cases ...]
       [--out benchmarks/results/jpeg_scans.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (bytes budget, side, color)
CASES = {
    "flood_436KB_gray_2048": (436_000, 2048, False),
    "flood_436KB_gray_4096": (436_000, 4096, False),  # the size; the slowest before
    "flood_436KB_ycbcr444_4096": (436_000, 4096, True),
    "flood_600KB_gray_9459": (600_000, 9459, False),  # the largest image max_pixels lets through
    "flood_2MB_ycbcr444_9459": (2_000_000, 9459, True),
    "flood_20KB_gray_64": (20_000, 64, False),  # > 500 scans of a tiny image
}

_CHILD = """
import sys, time
import mmcurate
from mmcurate.ops import decode_images, phash_bytes
blob = open(sys.argv[1], "rb").read()
t0 = time.perf_counter()
if sys.argv[2] == "decode_rgb":
    r = decode_images([blob], device="cpu", mode="RGB")
    status, err = int(r.status[0]), r.errors[0]
else:
    r = phash_bytes([blob], exact=False, device="cpu")
    status, err = int(r.status[0]), r.errors[0]
print(repr((time.perf_counter() - t0, status, err, mmcurate.__file__)))
"""


def run_case(path: str, call: str, timeout: float) -> dict:
    try:
        # cwd: the temp dir, so that PYTHONPATH (not the checkout) decides which build is imported.
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, path, call],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=os.path.dirname(path),
        )
    except subprocess.TimeoutExpired:
        return {"seconds": f">{timeout:g}", "status": None, "error": "TIMEOUT"}
    if proc.returncode != 0:
        return {"seconds": None, "status": None, "error": proc.stderr.strip().splitlines()[-1]}
    seconds, status, err, package = eval(proc.stdout.strip().splitlines()[-1])  # our own child's repr()
    return {"seconds": round(seconds, 3), "status": status, "error": err, "package": os.path.dirname(package)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "jpeg_scans.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.hostile.builders_images import count_scans, scan_flood_of_size

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("machine", {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()})
    runs = results.setdefault("runs", {})
    label = runs.setdefault(args.label, {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            budget, side, color = CASES[name]
            blob = scan_flood_of_size(budget, side, color)
            path = os.path.join(tmp, name + ".jpg")
            with open(path, "wb") as f:
                f.write(blob)
            row = {"bytes": len(blob), "scans": count_scans(blob), "side": side, "color": color}
            for call in ("decode_rgb", "integrity_phash_fast"):
                row[call] = run_case(path, call, args.timeout)
            label[name] = row
            print(args.label, name, json.dumps(row), flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
