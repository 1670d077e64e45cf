"""Benchmark: choosing the near-duplicate defaults (pHash-64 vs PDQ-256, dihedral matching, verification by a
second signal, the low-quality rule) on a labelled set built from real photos (GitHub issue 16).

The set (benchmarks/near_dup_set.py, ``build_near_dup_set``): scikit-image photo tiles with classic edits
(JPEG q30-95, resize, crop 2-8 %, brightness/contrast/saturation, watermark or logo overlay) and the 7
non-identity dihedral transforms, mixed with web-style distractors that are hard for perceptual hashes:
letterboxed tiles, flat graphics (solid colours, gradients, a small shape/star/logo on a flat background,
"no image" placeholder cards) and template mockups (same layout, different print or text: template pairs,
counted apart from duplicates and from negatives). Every distractor has a re-encoded copy (a duplicate).

Measured, over pairs (every linked pair) and over the groups the stage would form (star linkage in
preference order, as ``phash_dedup``), by edit kind:
  * pHash-64 fast / exact (``mmcurate.ops.phash_bytes``) at r = 6, 8, 10;
  * PDQ-256 (``pdq_codes``: the reference ``pdqhash`` on Pillow-decoded pixels, or ``mmcurate.ops.pdq_bytes``
    once it exists) at thresholds 10..70, with and without dihedral matching (min distance over the 8
    ``compute_dihedral`` variants), with and without verification by a second signal under the dihedral
    transform that matched: (a) exact pHash distance <= r2 of the transformed image, (b) dHash distance
    <= r2, (c) normalised cross-correlation of 32x32 luma thumbnails >= c; with and without the low-quality
    rule (PDQ quality < q on either side: never linked).
  * the chance-link model for 256-bit codes (binomial tail) and the measured PDQ distance distribution of
    the distinct images of the set.

Usage: python benchmarks/bench_near_dup_sweep.py [--bases 400] [--seed 0] [--pdq reference|auto]
Writes benchmarks/results/near_dup_sweep.json and prints the tables of benchmarks/README_near_dup.md.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmcurate.ops
from mmcurate.curate.dedup import near_groups, preference_rank
from mmcurate.ops import decode_images, dhash, phash, phash_bytes
from mmcurate.ops.hamming import hamming_pairs
from near_dup_set import CLASSIC_KINDS, DIHEDRAL_KINDS, build_near_dup_set, summary

PHASH_RADII = (6, 8, 10)
PDQ_THRESHOLDS = sorted(set(range(10, 71, 4)) | {31})
PDQ_MAX = max(PDQ_THRESHOLDS)
# second signals: (kind, parameter). phash / dhash: distance <= r2 and ncc: correlation >= c, on every linked pair,
# under the dihedral transform that matched; xpdq (candidates "pdq|phash" only): a pair found by pHash alone
# must also have PDQ distance <= t2 (a loose bound on the independent 256-bit code); xpdq_ncc: that and ncc >= c;
# dhash_ncc (candidates "pdq|phash" only): dhash <= r2 and ncc >= c on every linked pair.
VERIFY = (
    [("none", None)]
    + [("phash", 12), ("dhash", 8), ("dhash", 12)]
    + [("ncc", c) for c in (0.5, 0.8, 0.9)]
    + [("xpdq", t2) for t2 in (80, 90, 100)]
    + [("xpdq_ncc", (90, 0.5)), ("dhash_ncc", (12, 0.5))]
)
QUALITY = (0, 1, 10, 50)  # 0: no low-quality rule; 50: the reference's threshold; 1, 10: measured (flat graphics)
UNION_PHASH_R = 10  # source "pdq|phash": pHash-fast pairs within this radius are candidates too
TARGET_P, TARGET_DIHEDRAL_R = 0.995, 0.95

# pdqhash.compute_dihedral's order, as numpy transforms of an (h, w[, c]) array (checked in check_dihedral)
DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_v", "flip_h", "transpose", "transverse")
_T = (
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    lambda a: a[::-1],
    lambda a: a[:, ::-1],
    lambda a: a.swapaxes(0, 1),
    lambda a: np.rot90(a, 2).swapaxes(0, 1),
)


def dihedral_of(a: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(_T[k](a))


# ---------------------------------------------------------------------------------------------------------
# PDQ codes


def _words(codes) -> np.ndarray:
    """256-bit codes as uint64[..., 4], from bits uint8/int[..., 256], bytes uint8[..., 32] or uint64[..., 4].
    The bit order within the words does not matter for Hamming distances."""
    a = np.asarray(codes)
    if a.shape[-1] == 256:
        a = np.packbits(a.astype(np.uint8), axis=-1)
    if a.dtype == np.uint8 and a.shape[-1] == 32:
        return np.ascontiguousarray(a).view(np.uint64)
    if a.shape[-1] == 4:
        return np.ascontiguousarray(a, dtype=np.uint64)
    raise ValueError(f"unrecognised PDQ code layout {a.dtype}{a.shape}")


def pdq_codes(blobs, dihedral: bool | str = False, impl: str = "auto"):
    """(codes, quality): codes uint64[n, 4], or uint64[n, 8, 4] in compute_dihedral's order with dihedral, and
    PDQ quality int[n]. ``mmcurate.ops.pdq_bytes`` (the native kernel, bit-exact with pdqhash) when it exists
    and impl is "auto", else the reference ``pdqhash`` on Pillow-decoded RGB pixels.

    dihedral=True: the 8 codes of ``compute_dihedral`` (one hash, DCT sign flips); dihedral="recompute": the
    PDQ of each of the 8 transformed pixel arrays (8 hashes; always the reference)."""
    if impl == "auto" and dihedral != "recompute" and hasattr(mmcurate.ops, "pdq_bytes"):
        try:
            res = mmcurate.ops.pdq_bytes(blobs, dihedral=True) if dihedral else mmcurate.ops.pdq_bytes(blobs)
            codes = getattr(res, "codes", None)
            quality = getattr(res, "quality", None)
            if codes is None:
                codes, quality = res[0], res[1]
            codes = _words(codes)
            if codes.shape[:-1] == ((len(blobs), 8) if dihedral else (len(blobs),)):
                return codes, np.asarray(quality).astype(np.int64)
        except TypeError:  # an API without the dihedral option: fall back to the reference
            pass
    from concurrent.futures import ProcessPoolExecutor

    mode = "recompute" if dihedral == "recompute" else ("dct" if dihedral else "one")
    chunks = [(blobs[s : s + 64], mode) for s in range(0, len(blobs), 64)]
    workers = min(os.cpu_count() or 1, 8)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as ex:
            parts = list(ex.map(_pdq_chunk, chunks))
    else:
        parts = [_pdq_chunk(c) for c in chunks]
    codes = np.concatenate([c for c, _ in parts])
    return _words(codes), np.concatenate([q for _, q in parts])


def _pdq_chunk(args):
    """The reference pdqhash over a chunk of blobs (a worker process's task)."""
    import pdqhash
    from PIL import Image

    blobs, mode = args
    out, qual = [], []
    for b in blobs:
        rgb = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
        if mode == "recompute":
            hq = [pdqhash.compute(dihedral_of(rgb, k)) for k in range(8)]
            out.append(np.stack([h for h, _ in hq]))
            q = hq[0][1]
        elif mode == "dct":
            hs, q = pdqhash.compute_dihedral(rgb)
            out.append(np.stack(hs))
        else:
            h, q = pdqhash.compute(rgb)
            out.append(h)
        qual.append(q)
    return np.packbits(np.stack(out).astype(np.uint8), axis=-1), np.array(qual, dtype=np.int64)


def check_dihedral(blob: bytes) -> list[int]:
    """Distance between compute_dihedral's k-th code and the PDQ code of our k-th numpy transform."""
    import pdqhash
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    hs, _ = pdqhash.compute_dihedral(rgb)
    return [int(np.count_nonzero(pdqhash.compute(dihedral_of(rgb, k))[0] != hs[k])) for k in range(8)]


def pdq_pairs_within(codes8: np.ndarray, tmax: int, block: int = 128) -> np.ndarray:
    """Pairs i < j (int[m, 2]) with min_k |c0(i) ^ ck(j)| <= tmax over the 8 codes of j."""
    n = len(codes8)
    c0 = codes8[:, 0]
    rows = []
    for s in range(0, n, block):
        a = c0[s : s + block, None, :]  # (b, 1, 4)
        dmin = np.min([np.bitwise_count(a ^ codes8[None, :, k]).sum(-1, dtype=np.int32) for k in range(8)], 0)
        ii, jj = np.nonzero(dmin <= tmax)
        keep = ii + s < jj
        rows.append(np.stack([ii[keep] + s, jj[keep]], 1))
    return np.concatenate(rows).astype(np.int64)


def pair_distances(codes8: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """|c0(i) ^ ck(j)| for every pair and k: int[m, 8]."""
    return np.bitwise_count(codes8[i, None, 0, :] ^ codes8[j]).sum(-1).astype(np.int32)


def distance_matrix_upper(codes: np.ndarray) -> np.ndarray:
    """All pairwise distances i < j of uint64[n, w] codes, flattened."""
    return distance_matrix_upper_pair(codes, codes)


# ---------------------------------------------------------------------------------------------------------
# second signals, under each dihedral transform


def second_signals(blobs, chunk: int = 256):
    """Per image and dihedral k: exact pHash and dHash of the transformed image (uint64[n, 8]) and its 32x32
    luma thumbnail (float32[n, 8, 1024], mean 0, norm 1; zeros for flat thumbnails)."""
    from PIL import Image

    n = len(blobs)
    ph = np.zeros((n, 8), np.uint64)
    dh = np.zeros((n, 8), np.uint64)
    th = np.zeros((n, 8, 32 * 32), np.float32)
    for s in range(0, n, chunk):
        res = decode_images(blobs[s : s + chunk], mode="RGB", device="cpu")
        assert not np.count_nonzero(res.status), "every set image decodes"
        imgs = list(res.images)
        for k in range(8):
            tk = [dihedral_of(a, k) for a in imgs]
            ph[s : s + len(tk), k] = phash(tk, device="cpu")
            dh[s : s + len(tk), k] = dhash(tk, device="cpu")
        for i, a in enumerate(imgs):
            t = np.asarray(Image.fromarray(a).convert("L").resize((32, 32), Image.BOX), np.float32)
            for k in range(8):
                v = dihedral_of(t, k).ravel()
                v = v - v.mean()
                norm = float(np.linalg.norm(v))
                th[s + i, k] = v / norm if norm > 1e-3 * 32 else 0.0
    return ph, dh, th


# ---------------------------------------------------------------------------------------------------------
# metrics


def _c2(x) -> int:
    x = np.asarray(x, dtype=np.int64)
    return int((x * (x - 1) // 2).sum())


class Truth:
    """Labels of the set and the (base, variant) pairs per edit kind."""

    def __init__(self, records: list[dict]):
        self.n = len(records)
        self.group = np.array([r["group"] for r in records])
        self.family = np.array([r["family"] for r in records])
        self.category = np.array([r["category"] for r in records])
        self.rank = preference_rank([r["id"] for r in records])
        self.base_detail = {r["group"]: r["detail"] for r in records if r["kind"] == "base"}
        self.dup_pairs = _c2(np.bincount(self.group))
        fam = self.family >= 0
        self.templ_pairs = _c2(np.bincount(self.family[fam])) - _c2(np.bincount(self.group[fam]))
        base_of = {r["group"]: i for i, r in enumerate(records) if r["kind"] == "base"}
        self.kind_pairs: dict[str, np.ndarray] = {}
        for i, r in enumerate(records):
            if r["kind"] != "base":
                key = r["kind"] if r["category"] == "photo" else f"{r['category']}_copy"
                self.kind_pairs.setdefault(key, []).append((base_of[r["group"]], i))
        self.kind_pairs = {k: np.array(v) for k, v in self.kind_pairs.items()}
        self.classic = np.concatenate([self.kind_pairs[k] for k in CLASSIC_KINDS])
        self.dihedral = np.concatenate([self.kind_pairs[k] for k in DIHEDRAL_KINDS])
        self.copies = np.concatenate([self.kind_pairs[f"{c}_copy"] for c in ("letterbox", "flat", "template")])

    def key(self, pairs: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
        return lo.astype(np.int64) * self.n + hi

    def score(self, pairs: np.ndarray, detail: bool = True) -> dict:
        """Pair and star-group metrics of a set of linked pairs (int[m, 2], i != j, no duplicates)."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        i, j = pairs[:, 0], pairs[:, 1]
        dup = self.group[i] == self.group[j]
        templ = ~dup & (self.family[i] >= 0) & (self.family[i] == self.family[j])
        neg = ~dup & ~templ
        tp, fp, tl = int(dup.sum()), int(neg.sum()), int(templ.sum())
        linked = np.sort(self.key(pairs))

        def rec(bv):
            return round(float(np.isin(self.key(bv), linked).mean()), 4)

        out = {
            "pairs": {
                "precision": round(tp / (tp + fp), 5) if tp + fp else 1.0,
                "precision_templates_false": round(tp / (tp + fp + tl), 5) if tp + fp + tl else 1.0,
                "recall": round(tp / self.dup_pairs, 5),
                "recall_classic": rec(self.classic),
                "recall_dihedral": rec(self.dihedral),
                "recall_distractor_copies": rec(self.copies),
                "template_link_rate": round(tl / self.templ_pairs, 4),
                "tp": tp,
                "false_links": fp,
                "template_links": tl,
            }
        }
        p = out["pairs"]
        p["f1"] = round(2 * p["precision"] * p["recall"] / (p["precision"] + p["recall"]), 5) if tp else 0.0
        if detail:
            cats = np.sort(np.stack([self.category[i[neg]], self.category[j[neg]]], 1), 1)
            names, counts = np.unique(np.char.add(np.char.add(cats[:, 0], "-"), cats[:, 1]), return_counts=True)
            p["false_links_by_category"] = {str(a): int(b) for a, b in zip(names, counts)}
            p["recall_by_kind"] = {k: rec(v) for k, v in self.kind_pairs.items()}
            ga, gb = (
                np.minimum(self.group[i[neg]], self.group[j[neg]]),
                np.maximum(self.group[i[neg]], self.group[j[neg]]),
            )
            gp, gc = np.unique(np.stack([ga, gb], 1), axis=0, return_counts=True) if fp else (np.zeros((0, 2)), [])
            top = np.argsort(-np.asarray(gc), kind="stable")[:12]
            p["false_links_by_group_pair"] = [
                [self.base_detail[int(gp[t][0])], self.base_detail[int(gp[t][1])], int(gc[t])] for t in top
            ]
            p["false_group_pairs"] = len(gc)
        rep = star(self.n, pairs, self.rank)
        out["star"] = self.group_score(rep, detail)
        return out

    def group_score(self, rep: np.ndarray, detail: bool) -> dict:
        _, lab = np.unique(rep, return_inverse=True)
        predicted = _c2(np.bincount(lab))
        tp = _c2(np.unique(lab * (self.group.max() + 1) + self.group, return_counts=True)[1])
        fam = self.family >= 0
        in_fam = _c2(np.unique(lab[fam] * (self.family.max() + 1) + self.family[fam], return_counts=True)[1])
        in_fam_grp = _c2(np.unique(lab[fam] * (self.group.max() + 1) + self.group[fam], return_counts=True)[1])
        tl = in_fam - in_fam_grp
        fp = predicted - tp - tl
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / self.dup_pairs
        out = {
            "precision": round(p, 5),
            "recall": round(r, 5),
            "f1": round(2 * p * r / (p + r), 5) if tp else 0.0,
            "recall_classic": round(float(np.mean(rep[self.classic[:, 0]] == rep[self.classic[:, 1]])), 4),
            "recall_dihedral": round(float(np.mean(rep[self.dihedral[:, 0]] == rep[self.dihedral[:, 1]])), 4),
            "false_pairs": int(fp),
            "template_pairs": int(tl),
            "removed": int(np.count_nonzero(rep != np.arange(self.n))),
        }
        if detail:
            out["recall_by_kind"] = {
                k: round(float(np.mean(rep[v[:, 0]] == rep[v[:, 1]])), 4) for k, v in self.kind_pairs.items()
            }
        return out


def star(n: int, pairs: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Greedy star linkage over explicit edges (as near_groups(linkage="star")): in rank order, an unassigned
    sample becomes a representative and takes its unassigned neighbours."""
    rep = np.arange(n)
    if len(pairs) == 0:
        return rep
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    ptr = np.searchsorted(both[:, 0], np.arange(n + 1))
    assigned = np.zeros(n, bool)
    nodes = np.unique(both[:, 0])
    for v in nodes[np.argsort(rank[nodes], kind="stable")]:
        if assigned[v]:
            continue
        assigned[v] = True
        nb = both[ptr[v] : ptr[v + 1], 1]
        nb = nb[~assigned[nb]]
        assigned[nb] = True
        rep[nb] = v
    return rep


# ---------------------------------------------------------------------------------------------------------
# chance links


def binom_tail(bits: int, t: int) -> float:
    """P(two independent uniform codes of `bits` bits are within t): sum_{k<=t} C(bits, k) / 2^bits, exactly."""
    return math.fsum(math.comb(bits, k) for k in range(t + 1)) / 2.0**bits if t < bits else 1.0


def chance_table() -> dict:
    rows = {}
    for bits, ts in ((256, (16, 24, 31, 40, 48, 56, 64)), (64, (6, 8, 10))):
        for t in ts:
            p = math.fsum(math.comb(bits, k) for k in range(t + 1)) / 2**bits
            rows[f"{bits}/{t}"] = {
                "bits": bits,
                "t": t,
                "p": p,
                "per_sample_1M": p * 1e6,
                "per_sample_1B": p * 1e9,
                "per_sample_10B": p * 1e10,
            }
    keep = {}
    for bits in (256, 64):
        for n in (1e6, 1e9, 1e10):
            t = max(t for t in range(bits) if n * math.fsum(math.comb(bits, k) for k in range(t + 1)) / 2**bits <= 0.01)
            keep[f"{bits}bit_at_{n:.0e}"] = t
    return {"rows": rows, "largest_t_with_0.01_chance_links_per_sample": keep}


def empirical_tail(d: np.ndarray, bits: int, ts) -> dict:
    """Measured fraction of distinct pairs within t vs the binomial tail, and the distribution's moments."""
    return {
        "pairs": int(d.size),
        "mean": round(float(d.mean()), 2),
        "std": round(float(d.std()), 2),
        "binomial_mean": bits / 2,
        "binomial_std": round(math.sqrt(bits) / 2, 2),
        "min": int(d.min()),
        "tail": {int(t): {"measured": float(np.mean(d <= t)), "binomial": binom_tail(bits, int(t))} for t in ts},
    }


# ---------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", type=int, default=400)
    ap.add_argument("--base-side", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pdq", choices=("auto", "reference"), default="auto", help="auto: mmcurate.ops.pdq_bytes if any")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "near_dup_sweep.json")
    args = ap.parse_args()
    timings = {}

    t0 = time.perf_counter()
    records = build_near_dup_set(n_bases=args.bases, seed=args.seed, base_side=args.base_side)
    blobs = [r["blob"] for r in records]
    truth = Truth(records)
    timings["build_set_s"] = time.perf_counter() - t0
    print(f"set: {summary(records)}  ({timings['build_set_s']:.1f} s)", flush=True)

    t = time.perf_counter()
    ph_fast = phash_bytes(blobs, exact=False, device="cpu").codes
    ph_exact = phash_bytes(blobs, exact=True, device="cpu").codes
    timings["phash_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pdq_dct, quality = pdq_codes(blobs, dihedral=True, impl=args.pdq)
    timings["pdq_dihedral_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pdq_rec, quality_rec = pdq_codes(blobs, dihedral="recompute")
    timings["pdq_recomputed_8x_s"] = time.perf_counter() - t
    pdq_impl = "mmcurate.ops.pdq_bytes" if args.pdq == "auto" and hasattr(mmcurate.ops, "pdq_bytes") else "pdqhash"
    native_vs_reference = {
        "codes_equal": float(np.mean(np.all(pdq_dct[:, 0] == pdq_rec[:, 0], -1))),
        "quality_equal": float(np.mean(quality == quality_rec)),
    }
    dihedral_check = check_dihedral(blobs[0])
    t = time.perf_counter()
    sph, sdh, sth = second_signals(blobs)
    timings["second_signals_s"] = time.perf_counter() - t
    print(f"hashes: {timings}  dihedral check {dihedral_check} {native_vs_reference}", flush=True)

    # ---- pHash rows (and a sanity check of our star against near_groups)
    results = []
    for mode, codes in (("fast", ph_fast), ("exact", ph_exact)):
        for r in PHASH_RADII:
            pairs, _ = hamming_pairs(codes, r)
            rep = near_groups(codes, r, truth.rank, linkage="star", device="cpu").representative
            assert np.array_equal(rep, star(truth.n, pairs, truth.rank)), "star over edges == near_groups star"
            for q in QUALITY:
                keep = (quality[pairs[:, 0]] >= q) & (quality[pairs[:, 1]] >= q)
                row = {"method": f"phash_{mode}", "source": "phash", "t": r, "dihedral": "none", "verify": "none"}
                results.append({**row, "verify_param": None, "quality_min": q, **truth.score(pairs[keep])})

    # ---- candidate pairs: PDQ (either dihedral form) within the largest threshold, or pHash fast within 10
    t = time.perf_counter()
    ph_pairs, _ = hamming_pairs(ph_fast, UNION_PHASH_R)
    cand = np.unique(
        np.concatenate([pdq_pairs_within(pdq_dct, PDQ_MAX), pdq_pairs_within(pdq_rec, PDQ_MAX), ph_pairs]), axis=0
    )
    ci, cj = cand.T
    dist = {"dct": pair_distances(pdq_dct, ci, cj), "recompute": pair_distances(pdq_rec, ci, cj)}
    d0 = dist["dct"][:, 0]
    in_phash = np.bitwise_count(ph_fast[ci] ^ ph_fast[cj]) <= UNION_PHASH_R
    view = {"none": (d0, np.zeros_like(d0))}
    for mode in ("dct", "recompute"):
        view[mode] = (dist[mode].min(1), dist[mode].argmin(1))
    sig = {}
    for mode, (_, k) in view.items():
        sig[mode] = {
            "phash": np.bitwise_count(sph[ci, 0] ^ sph[cj, k]),
            "dhash": np.bitwise_count(sdh[ci, 0] ^ sdh[cj, k]),
            "ncc": np.einsum("ij,ij->i", sth[ci, 0], sth[cj, k]),
        }

    def select(row: dict) -> np.ndarray:
        d, _ = view[row["dihedral"]]
        m = d <= row["t"]
        if row["source"] == "pdq|phash":
            m |= in_phash
        v, param = row["verify"], row["verify_param"]
        if v == "ncc":
            m &= sig[row["dihedral"]]["ncc"] >= param
        elif v in ("phash", "dhash"):
            m &= sig[row["dihedral"]][v] <= param
        elif v == "xpdq":
            m = (d <= row["t"]) | (in_phash & (d <= param))
        elif v == "dhash_ncc":
            m &= (sig[row["dihedral"]]["dhash"] <= param[0]) & (sig[row["dihedral"]]["ncc"] >= param[1])
        elif v == "xpdq_ncc":
            m = ((d <= row["t"]) | (in_phash & (d <= param[0]))) & (sig[row["dihedral"]]["ncc"] >= param[1])
        q = row["quality_min"]
        return m & (quality[ci] >= q) & (quality[cj] >= q)

    for source in ("pdq", "pdq|phash"):
        for dih in ("none", "dct", "recompute") if source == "pdq" else ("none", "recompute"):
            for vname, param in VERIFY:
                if source == "pdq" and vname in ("xpdq", "xpdq_ncc", "dhash_ncc"):
                    continue  # the same as no verification there
                for q in QUALITY:
                    for th in PDQ_THRESHOLDS:
                        row = {"method": "pdq", "source": source, "t": th, "dihedral": dih, "verify": vname}
                        row.update(verify_param=param, quality_min=q)
                        m = select(row)
                        detail = vname == "none" and source == "pdq"
                        results.append({**row, **truth.score(np.stack([ci[m], cj[m]], 1), detail=detail)})
    timings["sweep_s"] = time.perf_counter() - t
    print(f"sweep: {len(results)} rows, {len(cand)} candidate pairs, {timings['sweep_s']:.1f} s", flush=True)

    # ---- recommendation: the targets, then the most recall (groups, then pairs), then the smallest threshold
    base_r = {
        mode: next(x for x in results if x["method"] == f"phash_{mode}" and x["t"] == 10 and x["quality_min"] == 0)
        for mode in ("fast", "exact")
    }
    need_classic = max(b["pairs"]["recall_classic"] for b in base_r.values())
    need_classic_star = max(b["star"]["recall_classic"] for b in base_r.values())

    def meets(x):
        return (
            x["pairs"]["precision"] >= TARGET_P
            and x["star"]["precision"] >= TARGET_P
            and x["pairs"]["recall_classic"] >= need_classic
            and x["star"]["recall_classic"] >= need_classic_star
            and x["pairs"]["recall_dihedral"] >= TARGET_DIHEDRAL_R
            and x["star"]["recall_dihedral"] >= TARGET_DIHEDRAL_R
        )

    def shortfall(x):  # how far from the targets, in units of each target's slack (0 = met)
        return (
            max(0.0, TARGET_P - min(x["pairs"]["precision"], x["star"]["precision"])) / (1 - TARGET_P)
            + max(0.0, need_classic - x["pairs"]["recall_classic"]) / 0.01
            + max(0.0, TARGET_DIHEDRAL_R - x["pairs"]["recall_dihedral"]) / 0.01
        )

    pdq_rows = [x for x in results if x["method"] == "pdq"]
    ok = [x for x in pdq_rows if meets(x)]
    order_key = lambda x: (-x["star"]["recall"], -x["pairs"]["recall"], x["t"])  # noqa: E731
    chosen = sorted(ok, key=order_key)[:8] if ok else sorted(pdq_rows, key=lambda x: (shortfall(x), *order_key(x)))[:8]
    # the best row that keeps precision >= the target (whatever its recall), per candidate source and dihedral form
    precise = {}
    for source in ("pdq", "pdq|phash"):
        for dih in ("none", "dct", "recompute"):
            rows = [
                x
                for x in pdq_rows
                if x["source"] == source
                and x["dihedral"] == dih
                and min(x["pairs"]["precision"], x["star"]["precision"]) >= TARGET_P
            ]
            if rows:
                precise[f"{source}/{dih}"] = sorted(rows, key=order_key)[0]
    chosen = [{**x, **truth.score(np.stack([ci[select(x)], cj[select(x)]], 1), detail=True)} for x in chosen]
    precise = {
        k: {**x, **truth.score(np.stack([ci[select(x)], cj[select(x)]], 1), detail=True)} for k, x in precise.items()
    }

    # quality-threshold sweep at the chosen configuration (measured, beside the reference's 50)
    best = chosen[0]
    q_sweep = {}
    for q in range(0, 101, 10):
        m = select({**best, "quality_min": q})
        q_sweep[q] = truth.score(np.stack([ci[m], cj[m]], 1), detail=False)
    quality_by_cat = {
        c: {p: float(np.percentile(quality[truth.category == c], p)) for p in (1, 5, 10, 25, 50)}
        for c in ("photo", "letterbox", "flat", "template")
    }
    flat_kinds = {}
    for fk in ("solid", "gradient", "shape", "placeholder"):
        idx = [i for i, r in enumerate(records) if r["category"] == "flat" and r["detail"].startswith(fk)]
        flat_kinds[fk] = {"median": float(np.median(quality[idx])), "max": int(quality[idx].max())}
    photo_q = quality[truth.category == "photo"]
    quality_share = {q: round(float(np.mean(photo_q < q)), 4) for q in (10, 20, 30, 50)}

    # ---- chance links and the measured distance distribution of the distinct images
    bases = np.array([i for i, r in enumerate(records) if r["kind"] == "base"])
    photo_bases = np.array([i for i in bases if records[i]["category"] == "photo"])
    ts256 = (16, 24, 31, 40, 48, 56, 64, 70, 80, 90, 100)
    ts64 = (6, 8, 10, 12, 16)
    emp = {
        "pdq_all_distinct": empirical_tail(distance_matrix_upper(pdq_dct[bases, 0]), 256, ts256),
        "pdq_photo_distinct": empirical_tail(distance_matrix_upper(pdq_dct[photo_bases, 0]), 256, ts256),
        "pdq_dihedral_min_all_distinct": empirical_tail(
            np.minimum.reduce([distance_matrix_upper_pair(pdq_rec[bases, 0], pdq_rec[bases, k]) for k in range(8)]),
            256,
            ts256,
        ),
        "phash_fast_all_distinct": empirical_tail(distance_matrix_upper(ph_fast[bases, None]), 64, ts64),
        "phash_fast_photo_distinct": empirical_tail(distance_matrix_upper(ph_fast[photo_bases, None]), 64, ts64),
    }

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "pdq_impl": pdq_impl,
        "pdq_identity_codes_vs_reference": native_vs_reference,
        "dihedral_order_check_bits": dihedral_check,
        "dihedral_dct_vs_recomputed_bits": dihedral_gap(records, pdq_dct, pdq_rec),
        "set": summary(records),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "targets": {
            "precision": TARGET_P,
            "recall_classic_at_least_phash_r10": {"pairs": need_classic, "star": need_classic_star},
            "recall_dihedral": TARGET_DIHEDRAL_R,
        },
        "targets_met_by": len(ok),
        "recommended": chosen,
        "most_recall_at_target_precision": precise,
        "quality_sweep_at_recommended": q_sweep,
        "pdq_quality_by_category_percentiles": quality_by_cat,
        "pdq_quality_flat_kinds": flat_kinds,
        "photo_share_below_quality": quality_share,
        "chance_links": chance_table(),
        "measured_distance_distribution": emp,
        "rows": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stored = {**result, "rows": compact_rows(results)}
    args.out.write_text(json.dumps(stored, separators=(",", ":"), default=float))
    report(result)
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s in all)")


ROW_KEYS = ("method", "source", "dihedral", "t", "verify", "verify_param", "quality_min")
PAIR_KEYS = (
    "precision",
    "precision_templates_false",
    "recall",
    "recall_classic",
    "recall_dihedral",
    "recall_distractor_copies",
    "template_link_rate",
    "false_links",
    "template_links",
)
STAR_KEYS = ("precision", "recall", "recall_classic", "recall_dihedral", "false_pairs", "template_pairs")


def compact_rows(rows: list[dict]) -> dict:
    """The sweep as a table (one list per row, columns named once); per-kind recalls and false links by
    category are kept for the rows that have them (no verification, PDQ candidates, and pHash)."""
    columns = list(ROW_KEYS) + [f"pairs.{k}" for k in PAIR_KEYS] + [f"star.{k}" for k in STAR_KEYS]
    data, detail = [], {}
    for n, x in enumerate(rows):
        data.append([x[k] for k in ROW_KEYS] + [x["pairs"][k] for k in PAIR_KEYS] + [x["star"][k] for k in STAR_KEYS])
        if "recall_by_kind" in x["pairs"]:
            detail[n] = {
                "pairs_recall_by_kind": x["pairs"]["recall_by_kind"],
                "pairs_false_links_by_category": x["pairs"]["false_links_by_category"],
                "star_recall_by_kind": x["star"]["recall_by_kind"],
            }
    return {"columns": columns, "data": data, "detail_by_row": detail}


def dihedral_gap(records: list[dict], pdq_dct: np.ndarray, pdq_rec: np.ndarray) -> dict:
    """Per dihedral edit: median distance of the variant's PDQ to the base's k-th code, compute_dihedral's
    (DCT sign flips) vs recomputed on the transformed pixels."""
    base_of = {r["group"]: i for i, r in enumerate(records) if r["kind"] == "base"}
    k_of = {name: k for k, name in enumerate(DIHEDRAL_NAMES)}
    out = {}
    for kind in DIHEDRAL_KINDS:
        idx = np.array([i for i, r in enumerate(records) if r["kind"] == kind])
        b = np.array([base_of[records[i]["group"]] for i in idx])
        k = k_of[kind]
        dd = np.bitwise_count(pdq_dct[b, k] ^ pdq_dct[idx, 0]).sum(-1)
        dr = np.bitwise_count(pdq_rec[b, k] ^ pdq_rec[idx, 0]).sum(-1)
        out[kind] = {"dct_median": float(np.median(dd)), "recomputed_median": float(np.median(dr))}
    return out


def distance_matrix_upper_pair(a: np.ndarray, b: np.ndarray, block: int = 256) -> np.ndarray:
    """|a_i ^ b_j| for i < j, flattened in the order of distance_matrix_upper."""
    n = len(a)
    out = []
    for s in range(0, n, block):
        d = np.bitwise_count(a[s : s + block, None, :] ^ b[None, :, :]).sum(-1)
        for r in range(d.shape[0]):
            out.append(d[r, s + r + 1 :])
    return np.concatenate(out)


def _row_md(x: dict) -> str:
    p, g = x["pairs"], x["star"]
    v = x["verify"] if x["verify"] == "none" else f"{x['verify']} {x['verify_param']}"
    name = x["method"] if x["method"] != "pdq" else x["source"]
    return (
        f"| {name} | {x['dihedral']} | {x['t']} | {v} | {x['quality_min'] or '-'} | {p['precision']:.4f} | "
        f"{p['recall_classic']:.3f} | {p['recall_dihedral']:.3f} | {p['recall_distractor_copies']:.3f} | "
        f"{p['recall']:.3f} | {g['precision']:.4f} | {g['recall_classic']:.3f} | {g['recall_dihedral']:.3f} | "
        f"{g['recall']:.3f} | {p['false_links']} | {p['template_link_rate']:.2f} |"
    )


HEADER = (
    "| candidates | dihedral | t | verify | q min | P | R classic | R dihedral | R distractor copies | R all | "
    "star P | star R classic | star R dihedral | star R all | false links | template links |\n"
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def report(res: dict):
    rows = res["rows"]

    def find(**kw):
        return [x for x in rows if all(x.get(k) == v for k, v in kw.items())]

    print("\n## pHash-64, and PDQ-256 without verification")
    print(HEADER)
    for x in find(method="phash_fast") + find(method="phash_exact"):
        print(_row_md(x))
    for dih in ("none", "dct", "recompute"):
        for q in QUALITY:
            for x in find(method="pdq", source="pdq", dihedral=dih, verify="none", quality_min=q):
                if x["t"] in (18, 26, 31, 42, 50, 58, 70):
                    print(_row_md(x))
    for source in ("pdq", "pdq|phash"):
        print(f"\n## {source} candidates, recomputed dihedral, with verification")
        print(HEADER)
        for vname, param in VERIFY:
            for q in QUALITY:
                for x in find(method="pdq", source=source, dihedral="recompute", verify=vname, verify_param=param):
                    if x["quality_min"] == q and x["t"] in (31, 42, 50, 58, 70):
                        print(_row_md(x))
    print(f"\n## recommended ({res['targets_met_by']} configurations meet the targets {res['targets']})")
    print(HEADER)
    for x in res["recommended"]:
        print(_row_md(x))
    print("\n## most recall at precision >= target, per candidate source / dihedral form")
    print(HEADER)
    for x in res["most_recall_at_target_precision"].values():
        print(_row_md(x))
    print("\nquality sweep at the first recommended:")
    for q, x in res["quality_sweep_at_recommended"].items():
        p, g = x["pairs"], x["star"]
        print(f"  q>={q}: P {p['precision']:.4f} R {p['recall']:.4f} star P {g['precision']:.4f} R {g['recall']:.4f}")
    print("quality by category:", res["pdq_quality_by_category_percentiles"], res["pdq_quality_flat_kinds"])
    print("photo share below quality:", res["photo_share_below_quality"])
    print("dihedral dct vs recomputed:", res["dihedral_dct_vs_recomputed_bits"])
    print("\n## false links by category (pairs), recall by kind")
    for x in find(method="phash_fast", quality_min=0) + res["recommended"][:2]:
        print(f"  {x['method']} {x.get('source')} {x['dihedral']} t={x['t']} {x['verify']} {x['verify_param']}:")
        print(f"     {x['pairs']['false_links_by_category']}\n     {x['pairs']['recall_by_kind']}")
    print("\n## chance links")
    for key, r in res["chance_links"]["rows"].items():
        print(
            f"  {key}: p={r['p']:.3e} per sample 1M {r['per_sample_1M']:.3e} 1B {r['per_sample_1B']:.3e} "
            f"10B {r['per_sample_10B']:.3e}"
        )
    print("  ", res["chance_links"]["largest_t_with_0.01_chance_links_per_sample"])
    for name, e in res["measured_distance_distribution"].items():
        print(f"  {name}: pairs {e['pairs']} mean {e['mean']} std {e['std']} min {e['min']}")
        for t, v in e["tail"].items():
            print(f"     <= {t}: measured {v['measured']:.3e} binomial {v['binomial']:.3e}")


if __name__ == "__main__":
    main()
