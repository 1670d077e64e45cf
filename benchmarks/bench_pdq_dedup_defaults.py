"""phash_dedup {hash: pdq} defaults: exact PDQ candidates within t bits, quality >= 1, verified by the exact pHash
of the same decode within v bits; pair precision and counts on the labelled set (benchmarks/README_near_dup.md,
"PDQ in phash_dedup"). Usage: bench_pdq_dedup_defaults.py [N_BASES] [SEED]."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np

from mmcurate import ops
from near_dup_set import build_near_dup_set

t0 = time.time()
recs = build_near_dup_set(
    n_bases=int(sys.argv[1]) if len(sys.argv) > 1 else 400, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0
)
print("built", len(recs), time.time() - t0, flush=True)
r = ops.pdq_bytes([x["blob"] for x in recs], exact=True, phash=True)
codes = np.asarray(r.codes)
q = np.asarray(r.quality)
ph = np.asarray(r.phash, np.uint64)
print("hashed", time.time() - t0, flush=True)
group = np.array([x["group"] for x in recs])
fam = np.array([x["family"] for x in recs])
kind = np.array([x["kind"] for x in recs])
cat = np.array([x["category"] for x in recs])
DIH = {"flip_h", "flip_v", "rot90", "rot180", "rot270", "transpose", "transverse"}
CLASSIC = {"jpeg", "resize", "crop", "colour", "overlay"}
# total duplicate pairs per class, for recall
out = {}
for t in (18, 22, 26, 31):
    pairs, dist = ops.hamming_pairs(codes, t)
    pairs = np.asarray(pairs).reshape(-1, 2)
    dist = np.asarray(dist)
    i, j = pairs[:, 0], pairs[:, 1]
    okq = (q[i] >= 1) & (q[j] >= 1)
    pd = np.bitwise_count(ph[i] ^ ph[j])
    same = group[i] == group[j]
    templ = (~same) & (fam[i] >= 0) & (fam[i] == fam[j])
    for v in (6, 8, 10, 12, 14, 16, 64):
        m = okq & (pd <= v)
        tp = int((m & same).sum())
        fp = int((m & ~same & ~templ).sum())
        tl = int((m & templ).sum())
        # classic recall: base-variant pairs of classic edits
        bi = kind[i] == "base"
        bj = kind[j] == "base"
        cl = m & same & ((bi & np.isin(kind[j], list(CLASSIC))) | (bj & np.isin(kind[i], list(CLASSIC))))
        flat_fp = int((m & ~same & ~templ & ((cat[i] == "flat") | (cat[j] == "flat"))).sum())
        out[(t, v)] = (tp, fp, tl, int(cl.sum()), flat_fp)
        p = tp / (tp + fp) if tp + fp else 1.0
        print(f"t={t} v={v}: P={p:.4f} tp={tp} fp={fp} (flat {flat_fp}) templ={tl}", end=" ")
        print(f"classic_tp={int(cl.sum())}", flush=True)
n_classic = sum(1 for x in recs if x["kind"] in CLASSIC)
print("classic base-variant pairs:", n_classic, "elapsed", time.time() - t0)
