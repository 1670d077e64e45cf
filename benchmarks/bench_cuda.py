"""GPU kernel throughput, with the CPU twin measured in the same run on the same data.

  python benchmarks/bench_cuda.py [--out benchmarks/results/cuda.json] [--repeats 3]

Cases: Hamming radius self-join and top-k over 64-bit codes (host codes in, host results out), resize and
pHash of a batch already on the GPU (device in), and decode -> pHash from encoded JPEG bytes. Each reports
items/s (best of --repeats, after a warm-up run) for cuda and cpu.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import best_rate
from mmcurate import build_info, ops
from mmcurate.ops import _cuda


def near_duplicate_codes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)
    dup = rng.integers(0, n, size=n // 10)
    flips = np.uint64(1) << rng.integers(0, 64, size=n // 10).astype(np.uint64)
    codes[rng.integers(0, n, size=n // 10)] = codes[dup] ^ flips
    return codes


def jpeg_blobs(n: int) -> list[bytes]:
    from PIL import Image
    from skimage import data

    base = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="JPEG", quality=90)
        base.append(buf.getvalue())
    return [base[i % len(base)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cuda.json"))
    args = ap.parse_args()
    r = args.repeats
    results: dict[str, dict[str, float]] = {}

    def case(name, n, cpu_fn, cuda_fn):
        results[name] = {"cuda": best_rate(cuda_fn, n, r), "cpu": best_rate(cpu_fn, n, r)}
        row = results[name]
        print(
            f"{name:45s} cuda {row['cuda']:14,.0f}/s   cpu {row['cpu']:14,.0f}/s   x{row['cuda'] / row['cpu']:.1f}",
            flush=True,
        )

    for n in (100_000, 1_000_000):
        codes = near_duplicate_codes(n)
        case(
            f"hamming_pairs r=4, n={n:,} (codes/s)",
            n,
            lambda codes=codes: ops.hamming_pairs(codes, 4, device="cpu"),
            lambda codes=codes: _cuda.hamming_pairs(codes, 4),
        )
    codes = near_duplicate_codes(100_000, 1)
    case(
        "hamming_knn k=10, n=100,000 (queries/s)",
        100_000,
        lambda: ops.hamming_knn(codes, 10, device="cpu"),
        lambda: _cuda.hamming_knn(codes, 10, None),
    )

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(256, 480, 640, 3), dtype=np.uint8)
    dev_batch = _cuda.to_device(batch)
    case(
        "resize 480x640 -> 224 bicubic (images/s)",
        len(batch),
        lambda: ops.resize_images(batch, 224, "bicubic", "shortest", device="cpu"),
        lambda: _cuda.resize_images(dev_batch, 224, "bicubic", "shortest").synchronize(),
    )
    case(
        "phash 480x640, device-resident (images/s)",
        len(batch),
        lambda: ops.phash(batch, device="cpu"),
        lambda: _cuda.hash_images(dev_batch, "phash"),
    )
    case(
        "pdq 480x640, device-resident (images/s)",
        len(batch),
        lambda: ops.pdq(batch, device="cpu"),
        lambda: _cuda.pdq_images(dev_batch),
    )
    blobs = jpeg_blobs(512)
    case(
        "decode RGB, 512x512 JPEG (images/s)",
        len(blobs),
        lambda: ops.decode_images(blobs, device="cpu"),
        lambda: _cuda.decode_images(blobs, "RGB", None, 89478485, True),
    )
    case(
        "phash_bytes exact, 512x512 JPEG (images/s)",
        len(blobs),
        lambda: ops.phash_bytes(blobs, exact=True, device="cpu"),
        lambda: _cuda.phash_bytes(blobs, True),
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = build_info()
    info["nvjpeg"] = _cuda.nvjpeg_info()
    out.write_text(json.dumps({"build": info, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
