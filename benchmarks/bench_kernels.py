"""Kernel throughput against peers, measured side by side in one run on the same images.

  python benchmarks/bench_kernels.py [--n 2000] [--out benchmarks/results/kernels.json] [--device cpu|cuda]

Images: the photographs scikit-image ships, scaled so the long side is 512 px and saved as JPEG q95
(about 100+ KB each), repeated to --n blobs. Each case reports images/s (best of --repeats runs).
Peers run as users run them: one Python process (imagehash, Pillow, torchvision), and for the
single-threaded peers also a process pool over all cores, so the ratio is not just our thread count.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import photo_jpeg_blobs
from _timing import best_rate
from mmcurate import build_info, ops

CPUS = os.cpu_count() or 1


# ---- peers (module-level so process pools can pickle them) -------------------------------------
def _imagehash_phash_bytes(b: bytes) -> str:
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.open(io.BytesIO(b))))


def _imagehash_phash_array(a: np.ndarray) -> str:
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(a)))


def _pil_shortest_center_crop(im, size: int) -> np.ndarray:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image, written out in Pillow."""
    from PIL import Image

    w, h = im.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))


def _pil_decode_resize(b: bytes, size: int = 224) -> np.ndarray:
    from PIL import Image

    return _pil_shortest_center_crop(Image.open(io.BytesIO(b)).convert("RGB"), size)


def _pil_draft_decode_resize(b: bytes, size: int = 224) -> np.ndarray:
    """Pillow with JPEG draft mode (DCT-domain downscale), its fastest way to a small image."""
    from PIL import Image

    im = Image.open(io.BytesIO(b))
    im.draft("RGB", (size, size))
    return _pil_shortest_center_crop(im.convert("RGB"), size)


class _Pool:
    """A warm process pool reused across repeats (pool start-up is not what we measure)."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(workers)
        self.workers = workers
        list(self.pool.map(abs, range(workers)))

    def map(self, fn, items):
        return list(self.pool.map(fn, items, chunksize=max(1, len(items) // (self.workers * 8))))

    def close(self):
        self.pool.shutdown()


def torchvision_decode_resize_fn(blobs, size=224):
    try:
        import torch
        import torchvision.transforms.v2.functional as F
        from torchvision.io import decode_jpeg
    except ImportError:
        return None
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]

    def run():
        for d in datas:
            img = decode_jpeg(d)
            img = F.resize(img, size, interpolation=F.InterpolationMode.BICUBIC, antialias=True)
            F.center_crop(img, size)

    return run


# ---- cases ----------------------------------------------------------------------------------------
def run(args) -> dict:
    blobs = photo_jpeg_blobs(args.n)
    n = len(blobs)
    mb = sum(map(len, blobs)) / n / 1024
    dev = args.device
    results = {"images": n, "mean_kb_per_image": round(mb, 1), "cases": {}}
    pool = _Pool(CPUS) if CPUS > 1 else None

    def case(name, ours: dict, peers: dict, target: tuple | None = None):
        row = {"ours_images_per_s": ours, "peers_images_per_s": peers}
        if target:
            ref_name, ratio = target
            best_ours = max(ours.values())
            row["target"] = {"vs": ref_name, "ratio_required": ratio, "ratio": round(best_ours / peers[ref_name], 2)}
            row["target"]["met"] = row["target"]["ratio"] >= ratio
        results["cases"][name] = row
        print(f"\n== {name}")
        labelled = {**{f"ours: {k}": v for k, v in ours.items()}, **{f"peer: {k}": v for k, v in peers.items()}}
        for k, v in labelled.items():
            print(f"   {k:<48} {v:10.1f} img/s")
        if target:
            t = row["target"]
            print(
                f"   ratio vs {t['vs']}: {t['ratio']}x (target >= {t['ratio_required']}x: "
                f"{'met' if t['met'] else 'MISSED'})"
            )

    # 1. decode + pHash from JPEG bytes
    ours = {
        "phash_bytes fast, all threads": best_rate(
            lambda: ops.phash_bytes(blobs, exact=False, device=dev), n, args.repeats
        ),
        "phash_bytes fast, 1 thread": best_rate(
            lambda: ops.phash_bytes(blobs, exact=False, device=dev, num_threads=1), n, args.repeats
        ),
        "phash_bytes exact, all threads": best_rate(
            lambda: ops.phash_bytes(blobs, exact=True, device=dev), n, args.repeats
        ),
    }
    sub = blobs[: max(50, n // 4)]
    peers = {
        "imagehash.phash(Image.open), 1 process": best_rate(
            lambda: [_imagehash_phash_bytes(b) for b in sub], len(sub), args.repeats
        )
    }
    if pool:
        peers[f"imagehash.phash(Image.open), {CPUS} processes"] = best_rate(
            lambda: pool.map(_imagehash_phash_bytes, sub), len(sub), args.repeats
        )
    case("decode+phash_jpeg_bytes", ours, peers, ("imagehash.phash(Image.open), 1 process", 4.0))
    # exactness on this data, for the record
    ref = [_imagehash_phash_bytes(b) for b in blobs[:14]]
    codes, st = ops.phash_bytes(blobs[:14], exact=True, device=dev)
    results["cases"]["decode+phash_jpeg_bytes"]["exact_mode_equal_to_imagehash"] = (
        f"{sum(r == f'{int(c):016x}' for r, c in zip(ref, codes))}/{len(ref)}"
    )

    # 2. pHash of decoded arrays (exact mode)
    arrays = list(ops.decode_images(blobs[:14], mode="RGB").images)
    arrays = [arrays[i % len(arrays)] for i in range(n)]
    ours = {
        "phash(arrays), all threads": best_rate(lambda: ops.phash(arrays, device=dev), n, args.repeats),
        "phash(arrays), 1 thread": best_rate(lambda: ops.phash(arrays, device=dev, num_threads=1), n, args.repeats),
    }
    sub = arrays[: max(50, n // 4)]
    peers = {
        "imagehash.phash(Image.fromarray), 1 process": best_rate(
            lambda: [_imagehash_phash_array(a) for a in sub], len(sub), args.repeats
        )
    }
    if pool:
        peers[f"imagehash.phash(Image.fromarray), {CPUS} processes"] = best_rate(
            lambda: pool.map(_imagehash_phash_array, sub), len(sub), args.repeats
        )
    case("phash_decoded_arrays", ours, peers, ("imagehash.phash(Image.fromarray), 1 process", 15.0))
    ref = [_imagehash_phash_array(a) for a in arrays[:14]]
    codes = ops.phash(arrays[:14])
    results["cases"]["phash_decoded_arrays"]["equal_to_imagehash"] = (
        f"{sum(r == f'{int(c):016x}' for r, c in zip(ref, codes))}/{len(ref)}"
    )

    # 3. decode + resize to 224 (CLIP-style shortest side + center crop)
    def ours_decode_resize(threads=None):
        res = ops.decode_images(blobs, mode="RGB", target_size=224, device=dev, num_threads=threads)
        return ops.resize_images(
            res.images, 224, interpolation="bicubic", mode="shortest", device=dev, num_threads=threads
        )

    ours = {
        "decode(target_size=224)+resize bicubic, all threads": best_rate(ours_decode_resize, n, args.repeats),
        "decode(target_size=224)+resize bicubic, 1 thread": best_rate(lambda: ours_decode_resize(1), n, args.repeats),
    }
    sub = blobs[: max(50, n // 4)]
    peers = {
        "Pillow open+convert+resize bicubic, 1 process": best_rate(
            lambda: [_pil_decode_resize(b) for b in sub], len(sub), args.repeats
        ),
        "Pillow draft+convert+resize bicubic, 1 process": best_rate(
            lambda: [_pil_draft_decode_resize(b) for b in sub], len(sub), args.repeats
        ),
    }
    if pool:
        peers[f"Pillow open+convert+resize bicubic, {CPUS} processes"] = best_rate(
            lambda: pool.map(_pil_decode_resize, sub), len(sub), args.repeats
        )
    tv = torchvision_decode_resize_fn(sub)
    if tv is not None:
        import torch

        peers[f"torchvision decode_jpeg+resize, {torch.get_num_threads()} threads"] = best_rate(
            tv, len(sub), args.repeats
        )
    case("decode+resize_224", ours, peers, ("Pillow open+convert+resize bicubic, 1 process", 2.5))
    if pool:
        pool.close()
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kernels.json"))
    args = ap.parse_args(argv)
    results = {
        "benchmark": "kernels",
        "device": args.device,
        "machine": {
            "cpus": CPUS,
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "build_info": build_info(),
        **run(args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
