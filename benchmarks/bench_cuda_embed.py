"""GPU embedding throughput: encoded JPEGs -> L2-normalised CLIP image embeddings at fp16 on one GPU.

  python benchmarks/bench_cuda_embed.py [--models ViT-B-32 ViT-L-14] [--n 4096] [--batch 256]
                                        [--out benchmarks/results/cuda_embed.json]

Models are randomly initialised (a forward pass costs the same whatever the weights). Images: the
scikit-image photographs, long side --side, JPEG q95, repeated to --n. Cases, images/s (best of --repeats):

  model_only        uint8 pixels already on the GPU -> normalise -> encode_image: the ceiling for any loader
  dali              DaliImageLoader(device=cuda): nvJPEG (mixed) decode + resize + crop on the GPU, then the
                    model; pixels never leave the device (skipped when DALI is not installed)
  native            NativeImageLoader on the CPU threads (DCT-scaled decode + resize), uint8 to the GPU
  dali_loader_only  / native_loader_only: the loader alone, for where the time goes

GPU utilisation (mean of NVML samples every 20 ms during the end-to-end runs) is recorded when nvidia-ml-py
is installed. Targets on an H100 (issue 4): ViT-B-32 >= 5000 images/s, ViT-L-14 >= 1000 images/s.
Without a GPU the script writes {"skipped": reason} and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import photo_jpeg_blobs
from _timing import best_rate


class GpuUtilisation:
    """Samples NVML's GPU utilisation in a thread while active (None when NVML is unavailable)."""

    def __init__(self, index: int = 0, period: float = 0.02):
        self.samples: list[int] = []
        self.period = period
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no nvidia-ml-py, or no driver: utilisation is simply not reported
            self._nvml = None

    def __enter__(self):
        self._stop = threading.Event()
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        if self._nvml is not None:
            self._thread.join()

    @property
    def mean(self):
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def bench_model(name: str, blobs: list[bytes], batch: int, repeats: int, precision: str) -> dict:
    import torch

    from mmcurate.models import NativeImageLoader, load_clip
    from mmcurate.models.dali_loader import DaliImageLoader, dali_available

    clip = load_clip(name, weights="random", device="cuda", precision=precision)
    pp = clip.preprocess
    n = len(blobs)
    out = {"model": clip.name, "dtype": str(clip.dtype), "batch": batch, "images_per_s": {}, "gpu_util_pct": {}}
    pixels = torch.randint(0, 256, (batch, pp.image_size, pp.image_size, 3), dtype=torch.uint8, device="cuda")

    def model_only():
        for _ in range(0, n, batch):
            clip.embed_images(pixels, batch_size=batch)
        torch.cuda.synchronize()

    loaders = {"native": NativeImageLoader(pp, batch_size=batch, scaled_decode=True)}
    if dali_available():
        loaders["dali"] = DaliImageLoader(pp, batch_size=batch, device="cuda")
    else:
        out["dali_skipped"] = "nvidia-dali-cuda130 is not installed"

    def end_to_end(loader):
        def run():
            for b in loader.iter_batches(blobs):
                clip.embed_images(b.pixels, batch_size=batch)
            torch.cuda.synchronize()

        return run

    def loader_only(loader):
        def run():
            for _ in loader.iter_batches(blobs):
                pass
            torch.cuda.synchronize()

        return run

    with GpuUtilisation() as u:
        out["images_per_s"]["model_only"] = round(best_rate(model_only, n, repeats), 1)
    out["gpu_util_pct"]["model_only"] = u.mean
    for key, loader in loaders.items():
        with GpuUtilisation() as u:
            out["images_per_s"][key] = round(best_rate(end_to_end(loader), n, repeats), 1)
        out["gpu_util_pct"][key] = u.mean
        out["images_per_s"][f"{key}_loader_only"] = round(best_rate(loader_only(loader), n, repeats), 1)
        if hasattr(loader, "stats"):
            out[f"{key}_stats"] = dict(loader.stats)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cuda_embed.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        reason = "torch is not installed" if torch is None else "no CUDA device visible to torch"
        out.write_text(json.dumps({"benchmark": "clip_embed_gpu", "skipped": reason}, indent=2) + "\n")
        print(f"skipped: {reason}")
        return

    blobs = photo_jpeg_blobs(args.n, args.side)
    result = {
        "benchmark": "clip_embed_gpu",
        "unit": "images/s",
        "images": {"n": args.n, "side": args.side, "format": "JPEG q95"},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0),
        },
        "targets_h100": {"ViT-B-32": 5000, "ViT-L-14": 1000},
        "models": [],
    }
    for name in args.models:
        r = bench_model(name, blobs, args.batch, args.repeats, args.precision)
        result["models"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
