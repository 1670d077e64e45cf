"""What phash_dedup's PDQ map part costs with dihedral matching and the template grid (GitHub issue 16).

  python benchmarks/bench_pdq_dihedral.py [--n 200] [--sides 256 512 1024] [--repeats 3]

One native call per configuration on the same JPEG blobs (the scikit-image photographs, long side --sides px, q95),
in this one process, 1 thread, CPU time per image of the best of --repeats (a shared machine disturbs CPU time less
than wall time; read the ratios, measured side by side): ops.pdq_bytes(exact=True, phash=True) (the identity codes:
what `dihedral: false, templates: off` stores), + detail=True (the local-detail grid), + dihedral="pixels" (PDQ and
pHash of the 8 transformed pixel arrays), both (the defaults); and the same hashes computed in Python from a decode
(ops.decode_images, reference.dihedral, ops.pdq, ops.phash, local_detail.detail_grid), the oracle the native call
replaces. Writes benchmarks/results/pdq_dihedral.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import photo_jpeg_blobs
from bench_pdq import best_cpu_ms
from mmcurate import build_info, ops
from mmcurate.curate.local_detail import detail_grid
from mmcurate.reference import dihedral

CONFIGS = {
    "identity (pdq + phash)": {},
    "+ detail grid": {"detail": True},
    "+ 8 transforms": {"dihedral": "pixels"},
    "+ 8 transforms + detail (defaults)": {"dihedral": "pixels", "detail": True},
}


def python_path(blobs):
    decoded = ops.decode_images(blobs, mode="RGB", device="cpu", num_threads=1)
    for pixels in decoded.images:
        variants = dihedral(pixels)
        ops.pdq(variants, device="cpu", num_threads=1)
        ops.phash(variants, device="cpu", num_threads=1)
        detail_grid(pixels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pdq_dihedral.json"))
    args = ap.parse_args()
    out: dict = {"sides": {}}
    for side in args.sides:
        blobs = photo_jpeg_blobs(args.n, side=side)
        n = len(blobs)
        ms = {}
        for name, kw in CONFIGS.items():
            ms[name] = best_cpu_ms(
                lambda kw=kw, blobs=blobs: ops.pdq_bytes(blobs, phash=True, device="cpu", num_threads=1, **kw),
                n,
                args.repeats,
            )
        ms["python: decode_images + pdq/phash of reference.dihedral + detail_grid"] = best_cpu_ms(
            lambda blobs=blobs: python_path(blobs), n, args.repeats
        )
        base = ms["identity (pdq + phash)"]
        out["sides"][str(side)] = {
            "images": n,
            "cpu_ms_per_image_1_thread": {k: round(v, 3) for k, v in ms.items()},
            "ratio_to_identity": {k: round(v / base, 2) for k, v in ms.items()},
        }
        print(side, json.dumps(out["sides"][str(side)], indent=1), flush=True)
    out |= {
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine skews every figure
        "machine": platform.processor() or platform.machine(),
        "build": {k: build_info()[k] for k in ("version", "march", "simd", "jpeg")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
