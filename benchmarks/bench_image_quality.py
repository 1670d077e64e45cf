"""Image-quality signals (mmcurate.ops.quality, the image_quality stage): where the defaults come from, what the
low-information rule does to pHash dedup, and what the signals cost.

    PYTHONPATH=. python benchmarks/bench_image_quality.py            # -> benchmarks/results/image_quality.json

1. categories   the signals on the labelled near-duplicate set (near_dup_set.build_near_dup_set: photo tiles and
                their edits, letterboxed tiles, solid / gradient / shape / placeholder graphics, template mockups):
                per category the share flagged low_information and the percentiles of every signal.
2. thresholds   real photos (the scikit-image photos at 512 px, JPEG q90) blurred (Gaussian sigma 0..8 px),
                darkened and brightened: the share of each falling outside the suggested min_sharpness,
                min_brightness and max_brightness; and the cross-format agreement (JPEG fast decode vs PNG).
3. phash_dedup  pair and star-group precision / recall of pHash (fast, radius 10) on the labelled set, seeds
                0, 1, 2, with and without the low-information rule (skip_low_information), and with looser and
                stricter variants of the rule (scored by bench_near_dup_sweep.Truth).
4. throughput   integrity's fused decode with the quality signals vs without (op level and the integrity stage's
                process(), one thread each, interleaved repeats: ratios from the same run), vs decoding to pixels
                and computing the same numbers with the NumPy reference and with OpenCV (when installed), on
                ~500 px JPEG re-encodings of the photos; and where the time goes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from bench_near_dup_sweep import Truth
from mmcurate.ops import decode_images, image_quality, phash_bytes
from mmcurate.ops.hamming import hamming_pairs
from mmcurate.ops.quality import QUALITY_SIGNALS
from mmcurate.ops.quality_reference import image_quality_reference
from mmcurate.stages.image import DEFAULT_LOW_INFORMATION_RADIUS, LOW_INFORMATION_STATS, LOW_INFORMATION_TOLERANCE
from near_dup_set import SOURCE_PHOTOS, build_near_dup_set

RADIUS = 10
STRICT_RADII = (0, 2, 4)
#: The stage's suggested thresholds (docstring of mmcurate.stages.quality.ImageQuality), checked here.
SUGGESTED = {"min_sharpness": 50.0, "min_brightness": 15.0, "max_brightness": 240.0}
#: (entropy <, flat_fraction >, border_fraction >): the rule (csrc kLowInfo*) and variants around it.
RULES = {
    "rule": (2.0, 0.9, 0.75),
    "looser (entropy<1, flat>0.95, no border)": (1.0, 0.95, 2.0),
    "stricter (entropy<3, flat>0.8, border>0.6)": (3.0, 0.8, 0.6),
    "no border term": (2.0, 0.9, 2.0),
}


def encode(im: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def photos(long_side: int) -> list[tuple[str, Image.Image]]:
    from skimage import data

    root = os.path.dirname(data.__file__)
    out = []
    for name in SOURCE_PHOTOS:
        im = Image.open(os.path.join(root, name)).convert("RGB")
        s = long_side / max(im.size)
        out.append((name, im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)))
    return out


def pct(v) -> list[float]:
    return [round(float(x), 3) for x in np.percentile(v, [0, 5, 50, 95, 100])]


def category_of(r: dict) -> str:
    if r["category"] != "flat":
        return r["category"]
    base_detail = r["detail"] if r["kind"] == "base" else r["base_detail"]
    return "flat_" + base_detail.split(":")[0]


def labelled(seed: int) -> list[dict]:
    recs = build_near_dup_set(n_bases=400, seed=seed)
    base = {r["group"]: r["detail"] for r in recs if r["kind"] == "base"}
    for r in recs:
        r["base_detail"] = base[r["group"]]
    return recs


# ---------------------------------------------------------------------------------------------------------
# 1. categories


def categories(recs: list[dict], q) -> dict:
    cat = np.array([category_of(r) for r in recs])
    out = {}
    for c in np.unique(cat):
        m = cat == c
        out[str(c)] = {
            "images": int(m.sum()),
            "low_information": round(float(q.low_information[m].mean()), 4),
            **{s: pct(getattr(q, s)[m]) for s in QUALITY_SIGNALS},
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# 2. thresholds


def thresholds(ph: list) -> dict:
    def measure(images):
        return phash_bytes([encode(im) for im in images], exact=False, quality=True, device="cpu").quality

    blur = {}
    for sigma in (0, 1, 2, 4, 8, 12, 16, 24):
        q = measure([im.filter(ImageFilter.GaussianBlur(sigma)) if sigma else im for _, im in ph])
        blur[str(sigma)] = {
            "sharpness": pct(q.sharpness),
            "below_min_sharpness": round(float(np.mean(q.sharpness < SUGGESTED["min_sharpness"])), 3),
        }
    light = {}
    for f in (0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.5, 4.0):
        q = measure([ImageEnhance.Brightness(im).enhance(f) for _, im in ph])
        light[str(f)] = {
            "brightness": pct(q.brightness),
            "below_min_brightness": round(float(np.mean(q.brightness < SUGGESTED["min_brightness"])), 3),
            "above_max_brightness": round(float(np.mean(q.brightness > SUGGESTED["max_brightness"])), 3),
        }
    # the same pictures as JPEG (fast decode at a reduced DCT scale) and PNG (full size)
    jpg = measure([im for _, im in ph])
    png = phash_bytes([encode(im, "PNG") for _, im in ph], exact=False, quality=True, device="cpu").quality
    agree = {}
    for s in QUALITY_SIGNALS:
        a, b = getattr(jpg, s).astype(np.float64), getattr(png, s).astype(np.float64)
        if s in ("sharpness", "contrast", "colourfulness", "brightness"):
            ratio = a[b > 1e-3] / b[b > 1e-3]
            agree[s] = {"jpeg_over_png": pct(ratio)}
        else:
            agree[s] = {"abs_diff": pct(np.abs(a - b))}
    per_photo = {n: {s: round(float(getattr(jpg, s)[i]), 2) for s in QUALITY_SIGNALS} for i, (n, _) in enumerate(ph)}
    return {
        "suggested": SUGGESTED,
        "blur_sigma_px_at_512": blur,
        "brightness_factor": light,
        "jpeg_fast_vs_png": agree,
        "photos_jpeg_q90_512px": per_photo,
        "photos_low_information": int(jpg.low_information.sum()),
    }


# ---------------------------------------------------------------------------------------------------------
# 3. phash_dedup with the rule


def dedup_effect(seeds) -> dict:
    out = {}
    for seed in seeds:
        t = time.perf_counter()
        recs = labelled(seed)
        r = phash_bytes([x["blob"] for x in recs], exact=False, quality=True, device="cpu")
        q = r.quality
        truth = Truth(recs)
        pairs, dist = hamming_pairs(r.codes, RADIUS)
        cat = np.array([x["category"] for x in recs])
        rows = {}
        # (flag, radius for pairs with a flagged image, whether flagged images link only to each other, whether their
        # brightness / contrast / colourfulness must agree)
        variants = {"none": (np.zeros(len(recs), bool), -1, False, False)}
        for name, (e, f, b) in RULES.items():
            variants[name] = ((q.entropy < e) | (q.flat_fraction > f) | (q.border_fraction > b), -1, False, False)
        assert np.array_equal(variants["rule"][0], q.low_information), "RULES['rule'] is the kernel's rule"
        # the alternative the issue names: a stricter radius for pairs with a low-information image; then flagged
        # images linked only to each other; then also only when they look alike: what phash_dedup ships
        # (low_information_radius, LOW_INFORMATION_TOLERANCE)
        for r_low in STRICT_RADII:
            variants[f"rule, low-information pairs within {r_low} bits"] = (q.low_information, r_low, False, False)
            variants[f"rule, low-information images with each other within {r_low} bits"] = (
                q.low_information,
                r_low,
                True,
                False,
            )
        variants[
            f"rule, low-information images with each other within {DEFAULT_LOW_INFORMATION_RADIUS} bits and "
            f"{LOW_INFORMATION_TOLERANCE:g} levels (phash_dedup's default)"
        ] = (q.low_information, DEFAULT_LOW_INFORMATION_RADIUS, True, True)
        stats = np.stack([getattr(q, c) for c in LOW_INFORMATION_STATS], axis=1).astype(np.float64)
        look = (np.abs(stats[pairs[:, 0]] - stats[pairs[:, 1]]) <= LOW_INFORMATION_TOLERANCE).all(axis=1)
        for name, (low, r_low, among, alike) in variants.items():
            la, lb = low[pairs[:, 0]], low[pairs[:, 1]]
            keep = (~la & ~lb) | ((dist <= r_low) & ((la & lb) if among else True) & (look if alike else True))
            s = truth.score(pairs[keep], detail=True)
            p = s["pairs"]
            rows[name] = {
                "flagged": {c: round(float(low[cat == c].mean()), 4) for c in np.unique(cat)},
                "pairs": {
                    k: p[k]
                    for k in (
                        "precision",
                        "recall",
                        "f1",
                        "recall_classic",
                        "recall_distractor_copies",
                        "false_links",
                        "false_links_by_category",
                    )
                },
                "star": {k: s["star"][k] for k in ("precision", "recall", "f1", "recall_classic", "false_pairs")},
            }
        out[str(seed)] = {"images": len(recs), "seconds": round(time.perf_counter() - t, 1), "rows": rows}
        if seed == seeds[0]:
            out["categories_seed0"] = categories(recs, q)
    return out


# ---------------------------------------------------------------------------------------------------------
# 4. throughput


def opencv_signals(blob: bytes):
    """The same numbers with OpenCV on the fully decoded image (what a script without the fused decode does)."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    f = cv2.resize(bgr.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    b, g, r = cv2.split(f)
    lum = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
    rg, yb = r - g, 0.5 * (r + g) - b
    small = cv2.resize(lum, (32, 32), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(small, cv2.CV_32F)[1:-1, 1:-1]
    hist = cv2.calcHist([np.clip(lum + 0.5, 0, 255).astype(np.uint8)], [0], None, [256], [0, 256]).ravel()
    p = hist[hist > 0] / lum.size
    rng = cv2.dilate(lum, np.ones((3, 3))) - cv2.erode(lum, np.ones((3, 3)))
    m_rg, s_rg = cv2.meanStdDev(rg)
    m_yb, s_yb = cv2.meanStdDev(yb)
    return (
        float(lap.var()),
        float(lum.mean()),
        float(lum.std()),
        float(np.hypot(s_rg[0, 0], s_yb[0, 0]) + 0.3 * np.hypot(m_rg[0, 0], m_yb[0, 0])),
        float(np.mean(rng <= 2.0)),
        float(-(p * np.log2(p)).sum()),
    )


def throughput(ph: list, repeats: int) -> dict:
    import pyarrow as pa

    from mmcurate.pipeline.schema import INPUT_SCHEMA
    from mmcurate.stages.image import Integrity

    blobs = []
    for _, im in ph:
        for side, quality in ((480, 75), (500, 85), (520, 95)):
            s = side / max(im.size)
            blobs.append(encode(im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS), quality=quality))
    blobs = blobs * 2
    n = len(blobs)
    table = pa.table(
        {
            "key": [f"k{i:04d}" for i in range(n)],
            "source": ["s"] * n,
            "image": blobs,
            "image_ext": ["jpg"] * n,
            "caption": [""] * n,
            "meta": ["{}"] * n,
        },
        schema=INPUT_SCHEMA,
    )
    plain_stage, quality_stage = Integrity(quality=False, num_threads=1), Integrity(quality=True, num_threads=1)
    decoded = decode_images(blobs, mode="RGB", target_size=64, fast=True, device="cpu", num_threads=1).images
    fns = {
        "phash_bytes": lambda: phash_bytes(blobs, exact=False, device="cpu", num_threads=1),
        "phash_bytes_quality": lambda: phash_bytes(blobs, exact=False, quality=True, device="cpu", num_threads=1),
        "integrity_stage": lambda: plain_stage.process(table),
        "integrity_stage_quality": lambda: quality_stage.process(table),
        "quality_kernel_on_decoded_reduced_rgb": lambda: image_quality(decoded, device="cpu", num_threads=1),
        "decode_reduced_luma": lambda: decode_images(
            blobs, mode="luma", target_size=64, fast=True, device="cpu", num_threads=1
        ),
        "decode_reduced_rgb": lambda: decode_images(
            blobs, mode="RGB", target_size=64, fast=True, device="cpu", num_threads=1
        ),
        "decode_full_rgb_plus_numpy_reference": lambda: [
            image_quality_reference(im) for im in decode_images(blobs, mode="RGB", device="cpu", num_threads=1).images
        ],
    }
    try:
        import cv2

        cv2.setNumThreads(1)
        fns["opencv_full_decode_plus_signals"] = lambda: [opencv_signals(b) for b in blobs]
    except ImportError:
        pass
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved: each repeat sees the same machine load for every variant
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = lambda a, b: [round(x / y, 3) for x, y in zip(times[a], times[b])]  # noqa: E731
    return {
        "images": n,
        "image_sizes": "480-520 px long side, JPEG q75/85/95 of the 20 photos, twice",
        "threads": 1,
        "repeats": repeats,
        "images_per_s_median": {k: round(n / v, 1) for k, v in med.items()},
        "ms_per_image_median": {k: round(1e3 * v / n, 3) for k, v in med.items()},
        "ratio_per_repeat": {
            "phash_bytes_quality / phash_bytes": ratio("phash_bytes_quality", "phash_bytes"),
            "integrity_stage_quality / integrity_stage": ratio("integrity_stage_quality", "integrity_stage"),
            "decode_full_rgb_plus_numpy_reference / phash_bytes_quality": ratio(
                "decode_full_rgb_plus_numpy_reference", "phash_bytes_quality"
            ),
            **(
                {
                    "opencv_full_decode_plus_signals / phash_bytes_quality": ratio(
                        "opencv_full_decode_plus_signals", "phash_bytes_quality"
                    )
                }
                if "opencv_full_decode_plus_signals" in times
                else {}
            ),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=("thresholds", "dedup", "throughput"), help="keep these from --out"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "image_quality.json")
    args = ap.parse_args()
    # sections skipped in this run keep their figures from an earlier run's JSON (rerun one part on a quiet machine)
    result: dict = json.loads(args.out.read_text()) if args.skip and args.out.exists() else {}
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    ph = photos(512)
    if "thresholds" not in args.skip:
        result["thresholds"] = thresholds(ph)
        print(json.dumps(result["thresholds"]["blur_sigma_px_at_512"]), flush=True)
    if "dedup" not in args.skip:
        result["phash_dedup"] = dedup_effect(args.seeds)
        for seed in args.seeds:
            for name, row in result["phash_dedup"][str(seed)]["rows"].items():
                print(seed, name, row["pairs"]["precision"], row["pairs"]["recall"], row["star"], flush=True)
    if "throughput" not in args.skip:
        result["throughput"] = throughput(ph, args.repeats)
        print(json.dumps(result["throughput"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
