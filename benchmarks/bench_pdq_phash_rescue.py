"""Can pHash candidates bring PDQ dedup's crop recall back? (GitHub issue 16; benchmarks/README_near_dup.md, "pHash
candidates beside PDQ".)

PDQ moves ~60 bits under a 2-8 % crop, so the shipped PDQ defaults (t=22, verified by exact pHash <= 12, quality >= 1)
miss crops that pHash r=10 links. This measures, at the pair level on the labelled set (benchmarks/near_dup_set.py),
what adding pairs whose exact pHashes lie within r bits (the `pdq_phash` column the PDQ map part already stores) does
to precision and classic-edit recall, verified by what the map part also stores: PDQ quality >= 1 on both sides, the
normalised cross-correlation of the 16 x 16 luma-mean grids (`pdq_detail`), optionally an upper bound on the PDQ
distance, and optionally the template rule (curate.local_detail.template_pairs). Pairs: every pair within 12 exact-
pHash bits (brute force); P = duplicate / (duplicate + negative) pairs linked, template pairs apart; R classic =
base-variant pairs of the 5 classic edits linked (pairs, not groups: an upper bound on what a grouping keeps).

Usage: python benchmarks/bench_pdq_phash_rescue.py [--bases 400] [--seeds 0 1 2]
Writes benchmarks/results/pdq_phash_rescue.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_sweep import run_seeds
from bench_pdq_dedup_defaults import labelled_pairs
from mmcurate.curate import local_detail
from near_dup_set import CLASSIC_KINDS, pair_label

# (name, pHash radius, PDQ upper bound, NCC floor, template rule)
RESCUES = [
    ("pHash<=8, NCC>=0.8", 8, 256, 0.8, False),
    ("pHash<=10, NCC>=0.8", 10, 256, 0.8, False),
    ("pHash<=10, NCC>=0.9", 10, 256, 0.9, False),
    ("pHash<=10, PDQ<=60, NCC>=0.8", 10, 60, 0.8, False),
    ("pHash<=10, PDQ<=40, NCC>=0.8", 10, 40, 0.8, False),
    ("pHash<=8, NCC>=0.8, not template", 8, 256, 0.8, True),
    ("pHash<=10, NCC>=0.8, not template", 10, 256, 0.8, True),
]


def grid_ncc(grids: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of the 16 x 16 luma means of images i[k] and j[k] (0 when one is flat)."""
    g = grids.astype(np.float64)[:, : local_detail.GRID**2]
    x = g[i] - g[i].mean(1, keepdims=True)
    y = g[j] - g[j].mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.where(den > 0, (x * y).sum(1) / np.maximum(den, 1e-9), 0.0)


def measure(seed: int, bases: int) -> dict:
    recs, (pdq, ph, quality, grids), i, j, dph = labelled_pairs(seed, bases)
    n = len(recs)
    near = dph <= 12
    i, j, dph = i[near], j[near], dph[near]
    dpdq = np.bitwise_count(pdq[i] ^ pdq[j]).sum(1)
    label = np.array([pair_label(recs, a, b) for a, b in zip(i, j)])
    kinds = np.array([r["kind"] for r in recs])
    ncc = grid_ncc(grids, i, j)
    template = local_detail.template_pairs(grids[i], grids[j], 0)
    both_ok = (quality[i] >= 1) & (quality[j] >= 1)
    base = kinds == "base"

    def edit_pairs(kind_set) -> np.ndarray:
        ks = list(kind_set)
        return ((base[i] & np.isin(kinds[j], ks)) | (base[j] & np.isin(kinds[i], ks))) & (label == "duplicate")

    def row(linked: np.ndarray) -> dict:
        dup, neg = int((linked & (label == "duplicate")).sum()), int((linked & (label == "negative")).sum())
        n_classic = int(np.isin(kinds, CLASSIC_KINDS).sum())
        out = {
            "P": round(dup / max(1, dup + neg), 4),
            "negative_pairs": neg,
            "template_pairs": int((linked & (label == "template")).sum()),
            "R_classic": round(int((linked & edit_pairs(CLASSIC_KINDS)).sum()) / n_classic, 4),
        }
        for k in ("crop", "overlay"):
            out[f"R_{k}"] = round(int((linked & edit_pairs([k])).sum()) / max(1, int((kinds == k).sum())), 4)
        return out

    pdq_links = (dpdq <= 22) & (dph <= 12) & both_ok  # the shipped defaults' identity links
    rows = {"PDQ t=22 v=12 q>=1 (the defaults, identity)": row(pdq_links), "pHash r=10 alone": row(dph <= 10)}
    for name, r, pmax, floor, tpl in RESCUES:
        extra = (dph <= r) & (dpdq <= pmax) & (ncc >= floor) & both_ok & (~template if tpl else True)
        rows[f"PDQ defaults + {name}"] = row(pdq_links | extra)
    return {"images": n, "pairs_within_12_phash_bits": int(i.size), "rows": rows}


if __name__ == "__main__":
    run_seeds(measure, "pdq_phash_rescue.json", 55)
