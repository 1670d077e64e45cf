"""PDQ-256: decode + PDQ from bytes against pdqhash (Meta's C++ reference) on Pillow-decoded images.

  python benchmarks/bench_pdq.py [--n 400] [--side 512] [--repeats 3] [--out benchmarks/results/pdq.json]

Images: the scikit-image photographs, long side --side px, JPEG q95, repeated to --n blobs. Everything runs
in this one process, best of --repeats. The peer is what a user writes: Pillow decode, convert("RGB"),
np.asarray, pdqhash.compute. Ours: pdq_bytes exact (full Pillow-exact decode, codes equal the peer's) and
fast (Y plane at a reduced DCT scale), on 1 thread and on all cores. Where the time goes (1 thread): our
RGB decode alone, pdq on the decoded arrays (luma + filter + DCT), and pdq on 64 x 64 arrays (luma +
quality + DCT + bits, no filter), so filter = pdq(decoded) - pdq(64 x 64).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import photo_jpeg_blobs
from _timing import best_rate
from mmcurate import build_info, ops

CPUS = os.cpu_count() or 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pdq.json"))
    args = ap.parse_args()

    import pdqhash
    from PIL import Image

    blobs = photo_jpeg_blobs(args.n, side=args.side)
    n = len(blobs)

    def peer_decode():
        return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]

    decoded = peer_decode()
    small = [np.ascontiguousarray(a[:64, :64]) for a in decoded]

    def peer():
        return [pdqhash.compute(a) for a in peer_decode()]

    # Exactness on this input, for the record: our exact codes and quality against the peer's.
    ref = peer()
    ours = ops.pdq_bytes(blobs, exact=True, exif=False, device="cpu")
    exact_equal = all(
        np.array_equal(np.unpackbits(c), v) and int(q) == rq for c, q, (v, rq) in zip(ours.codes, ours.quality, ref)
    )
    fast = ops.pdq_bytes(blobs, exact=False, exif=False, device="cpu")
    fast_bits = np.unpackbits(fast.codes ^ ours.codes, axis=1).sum(1)

    rates = {"pdqhash_pillow_1_thread": best_rate(peer, n, args.repeats)}
    for threads in sorted({1, CPUS}):
        for mode, exact in (("exact", True), ("fast", False)):
            rates[f"ours_{mode}_{threads}_threads"] = best_rate(
                lambda e=exact, t=threads: ops.pdq_bytes(blobs, exact=e, exif=False, device="cpu", num_threads=t),
                n,
                args.repeats,
            )
    parts = {
        "peer_pillow_decode": best_rate(peer_decode, n, args.repeats),
        "peer_pdqhash_on_arrays": best_rate(lambda: [pdqhash.compute(a) for a in decoded], n, args.repeats),
        "ours_decode_rgb": best_rate(
            lambda: ops.decode_images(blobs, mode="RGB", exif=False, device="cpu", num_threads=1), n, args.repeats
        ),
        "ours_pdq_on_arrays": best_rate(lambda: ops.pdq(decoded, device="cpu", num_threads=1), n, args.repeats),
        "ours_pdq_on_64x64": best_rate(lambda: ops.pdq(small, device="cpu", num_threads=1), n, args.repeats),
    }
    ms = {k: 1e3 / v for k, v in parts.items()}
    peer_rate = rates["pdqhash_pillow_1_thread"]
    result = {
        "images": n,
        "mean_pixels": float(np.mean([a.shape[0] * a.shape[1] for a in decoded])),
        "images_per_s": {k: round(v, 1) for k, v in rates.items()},
        "speedup_vs_pdqhash": {k: round(v / peer_rate, 2) for k, v in rates.items() if k.startswith("ours")},
        "ms_per_image_1_thread": {k: round(v, 3) for k, v in ms.items()},
        "ours_filter_ms": round(ms["ours_pdq_on_arrays"] - ms["ours_pdq_on_64x64"], 3),
        "exact_codes_and_quality_equal_pdqhash": exact_equal,
        "fast_vs_exact_bits": {"mean": float(fast_bits.mean()), "max": int(fast_bits.max())},
        "cpus": CPUS,
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine skews every figure
        "machine": platform.processor() or platform.machine(),
        "build": {k: build_info()[k] for k in ("version", "march", "simd", "jpeg")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
