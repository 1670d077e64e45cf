"""Can a crop-aligned comparison of the stored detail grids bring PDQ dedup's crop recall back? (GitHub issue 16;
benchmarks/README_near_dup.md, "Crop-aligned verification".)

PDQ moves ~60 bits under a 2-8 % crop, so crops are found only as pHash candidates (exact pHash <= 10, the
``pdq_phash`` column the PDQ map part stores), and verifying those costs precision (bench_pdq_phash_rescue.py): the
template rule, which removes look-alike tiles, also refuses the crops, because a crop shifts every cell of the grid.
This aligns the grids first. For a candidate pair, the window of one image (a crop: each axis scaled 0.88-1.0 and
offset, 0.01 / 0.005 steps) whose area average best predicts the other's grid (NCC of the luma means, coordinate
ascent over the two axes, both directions) is searched; under it, the predicted cell means and deviations (from the
cells' first and second moments, a piecewise-constant model of the image) go through the template rule
(curate.local_detail, CHANGE levels, TWO_SIDED share). Rows: the shipped defaults' identity links plus the pHash
candidates (quality >= 1 on both sides) whose aligned NCC clears a floor and that the aligned rule does not call
templates; on the stored 16 x 16 grid, and on a 32 x 32 grid measured from the pixels (what a 4x larger stored
signal would give). Pair level, identity links only; R counts base-variant pairs linked.

Usage: python benchmarks/bench_pdq_crop_alignment.py [--bases 400] [--seeds 0 1 2]
Writes benchmarks/results/pdq_crop_alignment.json.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_sweep import run_seeds
from bench_pdq_dedup_defaults import labelled_pairs
from mmcurate.curate import local_detail
from near_dup_set import CLASSIC_KINDS, pair_label

SCALES = np.arange(1.0, 0.88 - 1e-9, -0.01)
OFFSET_STEP = 0.005
# (NCC floor, CHANGE, TWO_SIDED) of the aligned rule
RULES = [(0.9, 8.0, 0.2), (0.9, 8.0, 0.35), (0.9, 12.0, 0.35), (0.95, 8.0, 0.2)]


def window_bank(g: int) -> np.ndarray:
    """float64[w, g, g]: for each crop window (scale s, offset u) of one axis, the weight of source cell c in target
    cell k (exact overlaps of the window's g equal cells with the source's)."""
    edges = np.arange(g + 1) / g
    out = []
    for s in SCALES:
        for u in np.arange(0, 1 - s + 1e-9, OFFSET_STEP):
            lo, hi = u + s * edges[:-1], u + s * edges[1:]
            ov = np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None)
            out.append(ov / (s / g))
    return np.stack(out)


def _ncc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    y = y - y.mean(axis=(-2, -1), keepdims=True)
    den = np.sqrt((x * x).sum((-2, -1)) * (y * y).sum((-2, -1)))
    return np.where(den > 1e-9, (x * y).sum((-2, -1)) / np.maximum(den, 1e-9), 0.0)


def best_window(bank: np.ndarray, a: np.ndarray, b: np.ndarray, rounds: int = 2):
    """(NCC, ry, rx): the crop window of mean grid a (ry a rx^T) that best predicts mean grid b."""
    eye = np.eye(len(a))
    ry, rx, best = eye, eye, float(_ncc(a, b))
    for _ in range(rounds):
        sc = _ncc(np.matmul(ry @ a, bank.transpose(0, 2, 1)), b[None])
        k = int(sc.argmax())
        if sc[k] > best:
            best, rx = float(sc[k]), bank[k]
        sc = _ncc(np.matmul(bank, a @ rx.T), b[None])
        k = int(sc.argmax())
        if sc[k] > best:
            best, ry = float(sc[k]), bank[k]
    return best, ry, rx


def aligned_pair(bank: np.ndarray, ga: np.ndarray, gb: np.ndarray):
    """(NCC, predicted [2, g, g], target [2, g, g]) for grids of means and deviations, the better direction."""
    out = []
    for src, dst in ((ga, gb), (gb, ga)):
        score, ry, rx = best_window(bank, src[0], dst[0])
        mean = ry @ src[0] @ rx.T
        second = ry @ (src[1] ** 2 + src[0] ** 2) @ rx.T
        out.append((score, np.stack([mean, np.sqrt(np.maximum(second - mean * mean, 0))]), dst))
    return max(out, key=lambda o: o[0])


def pixel_grids(recs, g: int) -> np.ndarray:
    """float64[n, 2, g, g]: cell means and deviations of PDQ's luma, measured on the decoded pixels."""
    out = []
    for r in recs:
        a = np.asarray(Image.open(io.BytesIO(r["blob"])).convert("RGB"), np.float64)
        y = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
        h, w = y.shape
        ys, xs = np.linspace(0, h, g + 1).astype(int), np.linspace(0, w, g + 1).astype(int)
        m = np.add.reduceat(np.add.reduceat(y, ys[:-1], 0), xs[:-1], 1)
        m2 = np.add.reduceat(np.add.reduceat(y * y, ys[:-1], 0), xs[:-1], 1)
        area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
        mean = m / area
        out.append(np.stack([mean, np.sqrt(np.maximum(m2 / area - mean * mean, 0))]))
    return np.stack(out)


def template_rule(pred: np.ndarray, target: np.ndarray, change: float, two_sided: float) -> np.ndarray:
    """The template rule (NumPy oracle: float cells, any grid side) on aligned grids."""
    g = pred.shape[-1]
    flat = (pred.reshape(len(pred), -1), target.reshape(len(target), -1))
    return local_detail.template_pairs_reference(*flat, 0, change=change, two_sided=two_sided, grid=g)


def measure(seed: int, bases: int) -> dict:
    recs, (pdq, ph, quality, stored), i, j, dph = labelled_pairs(seed, bases)
    n = len(recs)
    dpdq = np.bitwise_count(pdq[i] ^ pdq[j]).sum(1)
    near = ((dph <= 10) | (dpdq <= 22)) & (quality[i] >= 1) & (quality[j] >= 1)
    i, j, dph, dpdq = i[near], j[near], dph[near], dpdq[near]
    label = np.array([pair_label(recs, a, b) for a, b in zip(i, j)])
    kinds = np.array([r["kind"] for r in recs])
    base = kinds == "base"
    defaults = (dpdq <= 22) & (dph <= 12) & ~local_detail.template_pairs(stored[i], stored[j], 0)
    rescue = (dph <= 10) & ~defaults

    def row(linked: np.ndarray) -> dict:
        dup, neg = int((linked & (label == "duplicate")).sum()), int((linked & (label == "negative")).sum())
        out = {"P": round(dup / max(1, dup + neg), 4), "negative_pairs": neg}
        out["template_pairs"] = int((linked & (label == "template")).sum())
        hit = 0
        for k in CLASSIC_KINDS:
            pairs = ((base[i] & (kinds[j] == k)) | (base[j] & (kinds[i] == k))) & (label == "duplicate")
            out[f"R_{k}"] = round(int((linked & pairs).sum()) / max(1, int((kinds == k).sum())), 4)
            hit += int((linked & pairs).sum())
        out["R_classic"] = round(hit / int(np.isin(kinds, CLASSIC_KINDS).sum()), 4)
        return out

    rows = {"PDQ defaults (identity)": row(defaults), "pHash r=10 alone (quality >= 1)": row(dph <= 10)}
    timing = {}
    for g, grids in (
        (local_detail.GRID, stored.astype(np.float64).reshape(n, 2, local_detail.GRID, local_detail.GRID)),
        (32, pixel_grids(recs, 32)),
    ):
        bank = window_bank(g)
        at = np.flatnonzero(rescue)
        t0 = time.perf_counter()
        res = [aligned_pair(bank, grids[i[k]], grids[j[k]]) for k in at]
        timing[f"grid{g}_ms_per_pair"] = round(1e3 * (time.perf_counter() - t0) / max(1, at.size), 2)
        score = np.zeros(len(i))
        score[at] = [r[0] for r in res]
        pred, target = np.stack([r[1] for r in res]), np.stack([r[2] for r in res])
        src = "stored 16x16" if g == local_detail.GRID else "pixels 32x32"
        rows[f"+ pHash<=10, aligned NCC>=0.9, no template rule ({src})"] = row(defaults | (rescue & (score >= 0.9)))
        for floor, change, two in RULES:
            tpl = np.ones(len(i), bool)
            tpl[at] = template_rule(pred, target, change, two)
            name = f"+ pHash<=10, aligned NCC>={floor}, aligned template rule {change:g}/{two:g} ({src})"
            rows[name] = row(defaults | (rescue & (score >= floor) & ~tpl))
    return {"images": n, "rescue_candidates": int(rescue.sum()), "timing": timing, "rows": rows}


if __name__ == "__main__":
    run_seeds(measure, "pdq_crop_alignment.json", 80)
