"""CPU embedding throughput: our native loader vs open_clip's PIL preprocess (and DALI's CPU operators when
DALI is installed), feeding the same CLIP model.

  python benchmarks/bench_embed.py [--n 64] [--side 512] [--models mmcurate-tiny ViT-B-32]
                                   [--out benchmarks/results/embed.json]

Images: the photographs scikit-image ships, long side scaled to --side and saved as JPEG q95, repeated to
--n blobs. Models are randomly initialised (the cost of a forward pass does not depend on the weights).
Cases, each in images/s (best of --repeats):
  loader_only   encoded bytes -> model input: ours = decode (+ DCT scaling) + resize/crop to uint8 then
                normalise; open_clip = PIL open + preprocess_val (Resize, CenterCrop, ToTensor, Normalize)
  end_to_end    the same followed by encode_image in batches of --batch, L2-normalised
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


def bench_model(name: str, blobs: list[bytes], batch: int, repeats: int) -> dict:
    import torch
    from PIL import Image

    from mmcurate.models import NativeImageLoader, load_clip

    clip = load_clip(name, weights="random", device="cpu")
    pp = clip.preprocess
    tf = pp.open_clip_transform()
    n = len(blobs)
    loaders = {
        "native_scaled": NativeImageLoader(pp, batch_size=batch, scaled_decode=True),
        "native_full": NativeImageLoader(pp, batch_size=batch, scaled_decode=False),
    }
    from mmcurate.models.dali_loader import DaliImageLoader, dali_available

    if dali_available():  # DALI's CPU operators (its GPU path is benchmarks/bench_cuda_embed.py)
        loaders["dali_cpu"] = DaliImageLoader(pp, batch_size=batch, device="cpu")

    def native_loader_only(loader):
        def run():
            for b in loader.iter_batches(blobs):
                pp.normalize(torch.from_numpy(b.pixels))

        return run

    def native_end_to_end(loader):
        def run():
            for b in loader.iter_batches(blobs):
                clip.embed_images(b.pixels, batch_size=batch)

        return run

    def pil_batches():
        for i in range(0, n, batch):
            yield torch.stack([tf(Image.open(io.BytesIO(b))) for b in blobs[i : i + batch]])

    def pil_loader_only():
        for _ in pil_batches():
            pass

    def pil_end_to_end():
        with torch.inference_mode():
            for x in pil_batches():
                torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1)

    out = {
        "model": clip.name,
        "embed_dim": clip.embed_dim,
        "dtype": str(clip.dtype),
        "batch": batch,
        "loader_only": {},
        "end_to_end": {},
    }
    for key, loader in loaders.items():
        out["loader_only"][key] = best_rate(native_loader_only(loader), n, repeats)
    out["loader_only"]["open_clip_pil"] = best_rate(pil_loader_only, n, repeats)
    for key, loader in loaders.items():
        out["end_to_end"][key] = best_rate(native_end_to_end(loader), n, repeats)
    out["end_to_end"]["open_clip_pil"] = best_rate(pil_end_to_end, n, repeats)
    for case in ("loader_only", "end_to_end"):
        r = out[case]
        r["speedup_native_scaled_vs_pil"] = r["native_scaled"] / r["open_clip_pil"]
        if "dali_cpu" in r:
            r["speedup_native_scaled_vs_dali_cpu"] = r["native_scaled"] / r["dali_cpu"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["mmcurate-tiny", "ViT-B-32"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "embed.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from mmcurate import build_info

    blobs = photo_jpeg_blobs(args.n, args.side)
    result = {
        "benchmark": "clip_embed_cpu",
        "unit": "images/s",
        "images": {
            "n": args.n,
            "side": args.side,
            "format": "JPEG q95",
            "mean_bytes": int(np.mean([len(b) for b in blobs])),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "build_info": build_info(),
        "models": [],
    }
    for name in args.models:
        r = bench_model(name, blobs, args.batch, args.repeats)
        result["models"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
