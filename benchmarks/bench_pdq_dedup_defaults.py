"""phash_dedup end to end on the labelled near-duplicate set (benchmarks/near_dup_set.py): the stage's own map part
and global step (run_on_table, memory mode), pHash-64 at r = 6 / 8 / 10 against PDQ-256 with and without
verification, dihedral matching and template labels (GitHub issue 16; benchmarks/README_near_dup.md, "phash_dedup
end to end").

Metrics over the groups the stage forms (a group: a kept sample and the samples rejected as its duplicates): P =
duplicate pairs / (duplicate + negative pairs) grouped, template pairs apart; R classic / R dihedral = base-variant
pairs of the 5 classic / 7 dihedral edits grouped; R all = every duplicate pair grouped. Template links (kind
template): how many name a true template pair, how many a duplicate pair (a duplicate kept with templates: keep).
Map-part cost: seconds per image of the PDQ map part with and without dihedral + detail, and with keypoints
(curate.keypoints), in the same run (the ratios are what to read: the machine is shared), and the stored bytes per
sample. The keypoint rows (keypoints: true) add the pass that links what PDQ kept when keypoints verify a pHash
candidate (crops).

Usage: python benchmarks/bench_pdq_dedup_defaults.py [--bases 400] [--seeds 0 1 2]
Writes benchmarks/results/pdq_dedup_defaults.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import INPUT_SCHEMA
from mmcurate.pipeline.stage import registry
from near_dup_set import CLASSIC_KINDS, DIHEDRAL_KINDS, build_near_dup_set, pair_label

PLAIN = {"hash": "pdq", "dihedral": False, "templates": "off"}
CONFIGS = {
    "phash fast r=6": {"max_distance": 6},
    "phash fast r=8": {"max_distance": 8},
    "phash fast r=10": {"max_distance": 10},
    "pdq t=22 unverified": {**PLAIN, "verify_phash": None},
    "pdq t=22 v=12": PLAIN,
    "pdq t=22 v=12 dihedral": {**PLAIN, "dihedral": True},
    "pdq t=22 unverified dihedral": {**PLAIN, "dihedral": True, "verify_phash": None},
    "pdq t=18 v=12 dihedral": {**PLAIN, "dihedral": True, "pdq_threshold": 18},
    "pdq t=26 v=12 dihedral": {**PLAIN, "dihedral": True, "pdq_threshold": 26},
    "pdq t=22 v=8 dihedral": {**PLAIN, "dihedral": True, "verify_phash": 8},
    "pdq defaults (t=22 v=12 dihedral templates keep)": {"hash": "pdq"},
    "pdq t=22 v=12 dihedral templates drop": {"hash": "pdq", "templates": "drop"},
    "pdq defaults + keypoints r=12": {"hash": "pdq", "keypoints": True, "keypoint_radius": 12},
    "pdq defaults + keypoints r=14": {"hash": "pdq", "keypoints": True, "keypoint_radius": 14},
    "pdq defaults + keypoints (r=16, 10 inliers)": {"hash": "pdq", "keypoints": True},
    "pdq defaults + keypoints r=16, 12 inliers": {"hash": "pdq", "keypoints": True, "keypoint_inliers": 12},
    "pdq defaults + keypoints r=16, 16 inliers": {"hash": "pdq", "keypoints": True, "keypoint_inliers": 16},
    "pdq defaults + keypoints r=16, templates off": {"hash": "pdq", "keypoints": True, "templates": "off"},
}


def _input(recs) -> pa.Table:
    n = len(recs)
    return pa.table(
        {
            "key": [r["id"] for r in recs],
            "source": ["near_dup_set"] * n,
            "image": [r["blob"] for r in recs],
            "image_ext": ["jpg"] * n,
            "caption": [None] * n,
            "meta": ["{}"] * n,
        },
        schema=INPUT_SCHEMA,
    )


def _map(params, batch):
    part = registry.create("phash_dedup", params).map_part
    t0 = time.perf_counter()
    res = part.process(batch)
    return res.kept.drop_columns(["image"]), time.perf_counter() - t0


def stored_pdq_columns(recs) -> tuple:
    """What the PDQ map part stores for the labelled set's images, as arrays: (PDQ uint8[n, 32], exact pHash
    uint64[n], PDQ quality[n], detail grids uint8[n, DETAIL_BYTES]). For the pair-level benchmarks."""
    import numpy as np
    import pyarrow.compute as pc

    from mmcurate.curate import local_detail
    from mmcurate.stages.image import _fixed_rows, pdq_rows

    meta, _ = _map({"hash": "pdq"}, _input(recs))
    ph = pc.cast(meta.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    quality = meta.column("pdq_quality").to_numpy(zero_copy_only=False)
    grids = _fixed_rows(meta.column("pdq_detail"), local_detail.DETAIL_BYTES)
    return pdq_rows(meta.column("pdq")), ph, quality, grids


def labelled_pairs(seed: int, bases: int) -> tuple:
    """The labelled set and every pair of its images with their exact-pHash distance: (records, stored columns as
    stored_pdq_columns, i, j, pHash distances int32)."""
    import numpy as np

    recs = build_near_dup_set(n_bases=bases, seed=seed)
    stored = stored_pdq_columns(recs)
    i, j = np.triu_indices(len(recs), 1)
    return recs, stored, i, j, np.bitwise_count(stored[1][i] ^ stored[1][j]).astype(np.int32)


def _metrics(recs, dups: pa.Table, rejected: pa.Table) -> dict:
    idx = {r["id"]: i for i, r in enumerate(recs)}
    links = dups.to_pylist()
    gone = set(rejected.column("key").to_pylist())
    removed = [lk for lk in links if lk["key"] in gone]  # a kept template variant's link removes nothing
    members: dict[int, list[int]] = {}
    for lk in removed:
        members.setdefault(idx[lk["duplicate_of"]], []).append(idx[lk["key"]])
    grouped = Counter()
    together = set()
    for rep, ms in members.items():
        g = [rep, *ms]
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
                i, j = min(g[a], g[b]), max(g[a], g[b])
                grouped[pair_label(recs, i, j)] += 1
                together.add((i, j))
    base = {r["group"]: i for i, r in enumerate(recs) if r["kind"] == "base"}

    def recall(kinds):
        want = [(min(base[r["group"]], i), max(base[r["group"]], i)) for i, r in enumerate(recs) if r["kind"] in kinds]
        return sum(p in together for p in want) / max(1, len(want))

    groups = Counter(r["group"] for r in recs)
    dup_pairs = sum(c * (c - 1) // 2 for c in groups.values())
    tl = Counter(pair_label(recs, idx[lk["key"]], idx[lk["duplicate_of"]]) for lk in links if lk["kind"] == "template")
    pdq_links = Counter(
        pair_label(recs, idx[lk["key"]], idx[lk["duplicate_of"]]) for lk in links if lk["kind"] == "pdq"
    )
    transforms = Counter(lk["transform"] for lk in links if lk["transform"])
    tp, fp = grouped["duplicate"], grouped["negative"]
    return {
        "P": round(tp / max(1, tp + fp), 4),
        "R_classic": round(recall(CLASSIC_KINDS), 4),
        "R_dihedral": round(recall(DIHEDRAL_KINDS), 4),
        "R_all": round(tp / dup_pairs, 4),
        "grouped_pairs": dict(grouped),
        "removed": len(removed),
        "template_links": dict(tl),
        "template_pairs_in_pdq_links": pdq_links.get("template", 0),
        "transforms": dict(transforms),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bases", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pdq_dedup_defaults.json"))
    args = ap.parse_args()
    out = {"machine": platform.platform(), "bases": args.bases, "seeds": {}}
    for seed in args.seeds:
        t0 = time.time()
        recs = build_near_dup_set(n_bases=args.bases, seed=seed)
        batch = _input(recs)
        phash_meta, t_phash = _map({"max_distance": 10}, batch)
        plain_meta, t_plain = _map(PLAIN, batch)
        full_meta, t_full = _map({"hash": "pdq"}, batch)
        kp_meta, t_kp = _map({"hash": "pdq", "keypoints": True}, batch)
        n = batch.num_rows
        cols = [c for c in full_meta.column_names if c.startswith("pdq")]
        seed_out = {
            "images": n,
            "map_seconds_per_image": {
                "phash fast": round(t_phash / n, 5),
                "pdq identity (pdq_bytes)": round(t_plain / n, 5),
                "pdq dihedral + detail": round(t_full / n, 5),
                "pdq dihedral + detail + keypoints": round(t_kp / n, 5),
            },
            "map_ratio_dihedral_vs_identity": round(t_full / t_plain, 2),
            "map_ratio_keypoints_vs_dihedral": round(t_kp / t_full, 2),
            "bytes_per_sample": {c: kp_meta.column(c).nbytes / n for c in [*cols, "pdq_keypoints"]},
            "configs": {},
        }
        for name, params in CONFIGS.items():
            meta = phash_meta if params.get("hash") != "pdq" else kp_meta if params.get("keypoints") else full_meta
            stage = registry.create("phash_dedup", params)
            res = run_on_table(stage, meta.select(list(stage.requires)))
            m = _metrics(recs, res.duplicates, res.rejected)
            seed_out["configs"][name] = m
            print(
                f"seed {seed} {name:48s} P {m['P']:.4f} R classic {m['R_classic']:.3f} R dihedral "
                f"{m['R_dihedral']:.3f} R all {m['R_all']:.3f} false {m['grouped_pairs'].get('negative', 0)} "
                f"templ grouped {m['grouped_pairs'].get('template', 0)} template links {m['template_links']}",
                flush=True,
            )
        print(
            f"seed {seed}: map s/image {seed_out['map_seconds_per_image']}, ratio "
            f"{seed_out['map_ratio_dihedral_vs_identity']}, bytes {seed_out['bytes_per_sample']} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
        out["seeds"][str(seed)] = seed_out
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
