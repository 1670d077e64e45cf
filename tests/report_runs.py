"""Run directories for the report's views of CLIP, semantic clusters, splits, provenance and image quality:
session fixtures, registered by tests/conftest.py.

``semantic_run``: a real run of the demo dataset (clip_embed with the tiny model and random weights,
clip_score_filter, exact/pHash dedup, semantic_dedup, split stratified by the semantic clusters), with the
report observer collecting thumbnails, as `mmcurate run` does. Built once per session (the chromium check in
test_report.py opens its report too).

``quality_run``: a copy of it as an ``image_quality`` stage would leave it (the stage is built on another branch):
the quality signals computed here from the kept images' pixels with plain NumPy (a reference of what the signals
mean, not the stage's kernel), added to samples.parquet, and the blurriest kept samples moved to the rejects
(reason ``blurry``, with thumbnails, counts and a manifest stage entry), so that every part agrees.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

N_BLURRY = 2
MIN_BRIGHTNESS = 40.0


def semantic_recipe(input_dir: Path, out: Path) -> dict:
    from helpers import default_recipe_for

    r = default_recipe_for(input_dir, out)
    r["output"]["report"] = False  # the tests render it themselves; the observer still writes thumbs.parquet
    at = next(i for i, st in enumerate(r["stages"]) if "exact_dedup" in st)
    r["stages"][at:at] = [
        {"clip_embed": {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}},
        {"clip_score_filter": {"keep_fraction": 0.9}},
    ]
    r["stages"] += [
        {"semantic_dedup": {"eps": 0.02, "n_clusters": 4}},
        {"split": {"stratify_by": "semantic_cluster", "ratios": [0.6, 0.2, 0.2]}},
    ]
    return r


@pytest.fixture(scope="session")
def semantic_run(tmp_path_factory) -> Path:
    from helpers import build_demo_input, run_local
    from mmcurate.report import ReportObserver

    base = tmp_path_factory.mktemp("semantic_run")
    out = base / "out"
    run_local(semantic_recipe(build_demo_input(base / "input"), out), observers=[ReportObserver()])
    return out


def kept_images(out: Path) -> dict[str, bytes]:
    """key -> image bytes of the kept samples, straight from the output tars."""
    samples = pq.read_table(out / "samples.parquet", columns=["key", "shard", "image_ext"]).to_pylist()
    found = {}
    for row in samples:
        with tarfile.open(out / "shards" / row["shard"]) as tf:
            found[row["key"]] = tf.extractfile(f"{row['key']}.{row['image_ext']}").read()
    return found


def quality_signals(image: bytes) -> dict:
    """The image_quality signals of one image, written out plainly in NumPy."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    lap = luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1] - 4 * luma[1:-1, 1:-1]
    rg, yb = r - g, 0.5 * (r + g) - b
    hist = np.bincount(np.clip(luma, 0, 255).astype(np.int64).ravel(), minlength=256) / luma.size
    nz = hist[hist > 0]
    h, w = luma.shape
    blocks = luma[: h // 8 * 8, : w // 8 * 8].reshape(h // 8, 8, w // 8, 8).std(axis=(1, 3))
    flat_rows = (luma.std(axis=1) < 2).sum()
    flat_cols = (luma.std(axis=0) < 2).sum()
    return {
        "sharpness": float(lap.var()),
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "border_fraction": float(min(1.0, flat_rows / h + flat_cols / w)),
        "flat_fraction": float((blocks < 2).mean()) if blocks.size else 1.0,
        "entropy": float(-(nz * np.log2(nz)).sum()),
    }


@pytest.fixture(scope="session")
def quality_run(semantic_run, tmp_path_factory) -> Path:
    from mmcurate.report.thumbnails import THUMBS_SCHEMA, make_thumbnails

    out = tmp_path_factory.mktemp("quality_run") / "out"
    shutil.copytree(semantic_run, out)
    samples = pq.read_table(out / "samples.parquet")
    images = kept_images(out)
    keys = samples.column("key").to_pylist()
    signals = [quality_signals(images[k]) for k in keys]
    # integrity measured them too: replaced by this module's, which the tests' expectations are built from
    samples = samples.drop_columns([c for c in (*signals[0], "low_information") if c in samples.column_names])
    for name in signals[0]:
        samples = samples.append_column(name, pa.array([s[name] for s in signals], pa.float32()))
    entropy = np.array([s["entropy"] for s in signals])
    low = np.zeros(len(keys), bool)
    low[np.argsort(entropy, kind="stable")[:2]] = True  # the two lowest-entropy images are flagged
    samples = samples.append_column("low_information", pa.array(low))
    # the N_BLURRY blurriest are what the stage rejected, with min_sharpness between them and the rest
    sharp = np.array([s["sharpness"] for s in signals])
    order = np.argsort(sharp, kind="stable")
    min_sharpness = float((sharp[order[N_BLURRY - 1]] + sharp[order[N_BLURRY]]) / 2)
    blurry = [keys[i] for i in order[:N_BLURRY]]
    gone = pc.is_in(samples.column("key"), value_set=pa.array(blurry))
    pq.write_table(samples.filter(pc.invert(gone)), out / "samples.parquet")
    sources = dict(zip(keys, samples.column("source").to_pylist()))
    rejects = pq.read_table(out / "rejects.parquet")
    moved = pa.table(
        {
            "key": blurry,
            "source": [sources[k] for k in blurry],
            "stage": ["image_quality"] * N_BLURRY,
            "reason": ["blurry"] * N_BLURRY,
            "detail": [f"sharpness {sharp[keys.index(k)]:.1f} < {min_sharpness:.1f}" for k in blurry],
        },
        schema=rejects.schema,
    )
    pq.write_table(pa.concat_tables([rejects, moved]), out / "rejects.parquet")
    thumbs = pq.read_table(out / "thumbs.parquet")
    tiles = make_thumbnails([images[k] for k in blurry])
    extra = pa.table(
        {
            "key": blurry,
            "kind": ["reject"] * N_BLURRY,
            "stage": ["image_quality"] * N_BLURRY,
            "reason": ["blurry"] * N_BLURRY,
            "group": [None] * N_BLURRY,
            "distance": [None] * N_BLURRY,
            "decoded": [t.decoded for t in tiles],
            "note": [None] * N_BLURRY,
            "caption": [None] * N_BLURRY,
            "jpeg": [t.jpeg for t in tiles],
        },
        schema=THUMBS_SCHEMA,
    )
    pq.write_table(pa.concat_tables([thumbs, extra]), out / "thumbs.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    params = {
        "min_sharpness": min_sharpness,
        "min_brightness": MIN_BRIGHTNESS,
        "max_brightness": None,
        "reject_low_information": False,
    }
    manifest["run"]["recipe"]["stages"].append({"image_quality": params})
    n_kept = manifest["counts"]["kept"]
    manifest["stages"].append(
        {
            "name": "image_quality",
            "kind": "map",
            "in": n_kept,
            "kept": n_kept - N_BLURRY,
            "rejected": N_BLURRY,
            "reasons": {"blurry": N_BLURRY},
            "seconds": 0.01,
        }
    )
    manifest["counts"].update(kept=n_kept - N_BLURRY, rejected=manifest["counts"]["rejected"] + N_BLURRY)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out
