"""One huge duplicate cluster through phash_dedup and split, in both global modes: wall time and peak RSS.

  python benchmarks/bench_dup_cluster.py [--n 100000 ...] [--distinct 100000] [--cases same near3 near5 ...]
                                         [--stages phash_dedup split] [--before COMMIT --before-n 10000] [--limit-gb 10]
                                         [--out benchmarks/results/dup_cluster.json]

Web crawls hold placeholder images repeated tens of thousands of times. The survivors are written as the map
phase leaves them (_work/meta/NNNNN.parquet: key, source, pHash, clip_score; 20 shards) with one cluster of
``n`` samples and ``distinct`` unrelated codes, shuffled over the shards:

- ``same``: n copies of one pHash (byte copies of one image),
- ``near3`` / ``near5``: n re-encodings of it, each 0..3 / 0..5 bits away from it;
- ``pdq_same`` / ``pdq_near8``: the same with PDQ-256 (``pdq``, ``pdq_quality`` 80, ``pdq_phash``): n copies,
  or n re-encodings 0..8 of 256 bits away (nearly all distinct codes) whose exact pHashes are 0..3 bits from
  the original's; phash_dedup runs with ``hash: pdq`` (verified links) and split links by PDQ
  (``near_hash: auto``). These survivors have no dihedral or detail columns, so phash_dedup runs with
  ``dihedral: false, templates: off``;
- ``pdq_near8_defaults``: pdq_near8 plus ``pdq_dihedral`` / ``pdq_dihedral_phash`` (each other transform's code:
  the identity code XOR a fixed random mask per transform, as for an asymmetric image) and ``pdq_detail`` (one
  grid for all), so phash_dedup runs with the default PDQ config (``dihedral: true, templates: keep``);
- ``pdq_template_prints``: pdq_near8_defaults where the cluster is one mockup with TEMPLATE_PRINTS prints: each
  sample's grid has a 6 x 6-cell print area of its print's own random means and deviations, so the template rule
  refuses every pair of different prints (kept, kind template) and the copies of one print are its duplicates.

Each (case, mode, stage) runs in its own process under an address-space limit (a run that would take the
machine down fails instead); reported: wall time of the global phase, the process's VmHWM (ru_maxrss would
count the parent's peak over fork + exec), the largest group and the duplicate count. ``--before COMMIT``
also runs the code of that commit (a git worktree sharing this checkout's native build) at ``--before-n``.
Target (issue 11): 100k copies + 100k distinct under 1.5 GB and 60 s, in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import proc_status_mb

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "same": (64, 0),
    "near3": (64, 3),
    "near5": (64, 5),
    "pdq_same": (256, 0),
    "pdq_near8": (256, 8),
    "pdq_near8_defaults": (256, 8),
    "pdq_template_prints": (256, 8),
}
#: pdq_template_prints: how many prints the cluster's mockup carries (--prints)
TEMPLATE_PRINTS = 50
N_SHARDS = 20
ADDRESS_SPACE = 10 << 30  # --limit-gb


def cluster_codes(n: int, n_distinct: int, max_flips: int, seed: int = 0, bits: int = 64):
    """(codes, verify pHashes or None): n codes of one image, each 0..max_flips distinct bits from it, and
    n_distinct unrelated ones, shuffled. 64-bit codes are uint64[n], 256-bit ones uint64[n, 4] (PDQ) with
    their exact pHashes, 0..3 bits from the image's for the cluster."""
    rng = np.random.default_rng(seed)
    words = bits // 64
    head = rng.integers(0, 2**64, words, dtype=np.uint64)
    codes = np.tile(head, (n, 1))
    if max_flips:
        n_flips = rng.integers(0, max_flips + 1, n)
        for k in range(1, max_flips + 1):  # distinct bits: a re-encoding k flips away is k bits away
            sel = np.flatnonzero(n_flips >= k)
            bit = rng.integers(0, bits - k + 1, sel.size) + k - 1
            codes[sel, bit // 64] ^= np.uint64(1) << (bit % 64).astype(np.uint64)
    codes = np.concatenate([codes, rng.integers(0, 2**64, (n_distinct, words), dtype=np.uint64)])
    order = rng.permutation(len(codes))
    if bits == 64:
        return codes.reshape(-1)[order], None
    verify = np.full(n, rng.integers(0, 2**64, dtype=np.uint64))
    for _ in range(3):
        sel = rng.random(n) < 0.5
        verify[sel] ^= np.uint64(1) << rng.integers(0, 64, int(sel.sum())).astype(np.uint64)
    verify = np.concatenate([verify, rng.integers(0, 2**64, n_distinct, dtype=np.uint64)])
    return codes[order], verify[order]


def build(work: Path, codes: np.ndarray, verify: np.ndarray | None, dihedral: bool = False, prints: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n = len(codes)
    if codes.ndim == 1:
        hashes = {"phash": pa.array(codes, pa.uint64())}
    else:
        raw = pa.py_buffer(np.ascontiguousarray(codes, "<u8").tobytes())
        hashes = {
            "pdq": pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, raw]),
            "pdq_quality": pa.array(np.full(n, 80, np.int16)),
            "pdq_phash": pa.array(verify, pa.uint64()),
        }
        if dihedral:
            from mmcurate.curate import local_detail

            mrng = np.random.default_rng(7)
            masks, pmasks = mrng.integers(0, 2**64, (7, 4), np.uint64), mrng.integers(0, 2**64, 7, np.uint64)
            grid = np.tile(mrng.integers(0, 256, local_detail.DETAIL_BYTES, np.uint8), (n, 1))
            if prints:
                g, area = local_detail.GRID, np.s_[:, :, 5:11, 5:11]
                art = mrng.integers(0, 256, (prints, 2, g, g), np.uint8)
                cells = grid.reshape(n, 2, g, g)
                cells[area] = art[rng.integers(0, prints, n)][area]
            for name, a, w in (
                ("pdq_dihedral", codes[:, None, :] ^ masks[None], 7 * 32),
                ("pdq_dihedral_phash", verify[:, None] ^ pmasks[None], 7 * 8),
                ("pdq_detail", grid, local_detail.DETAIL_BYTES),
            ):
                buf = pa.py_buffer(np.ascontiguousarray(a, "<u8" if a.dtype != np.uint8 else np.uint8).tobytes())
                hashes[name] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(w), n, [None, buf])
    table = pa.table(
        {
            "key": pa.array([f"{i:010d}" for i in range(n)]),
            "source": pa.array([f"shard{i * N_SHARDS // n:05d}" for i in range(n)]),
            **hashes,
            "clip_score": pa.array(rng.random(n).astype(np.float32)),
        }
    )
    (work / "meta").mkdir(parents=True)
    bounds = np.linspace(0, n, N_SHARDS + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(a, b - a), work / "meta" / f"{i:05d}.parquet")


def run_one(work: Path, mode: str, stage: str) -> dict:
    """In the child process: one global step over the survivors."""
    import pyarrow.parquet as pq

    import mmcurate
    from mmcurate.pipeline.executor import StagePlan
    from mmcurate.pipeline.global_phase import run_memory_global_phase, run_sharded_global_phase
    from mmcurate.pipeline.stage import registry

    names = pq.read_schema(work / "meta" / "00000.parquet").names
    pdq = "pdq" in names
    # the default pdq config (dihedral: true, templates: keep) where the survivors have its columns
    pdq_params = {"hash": "pdq"} if "pdq_dihedral" in names else {"hash": "pdq", "dihedral": False, "templates": "off"}
    params = {"keep": {"max": "clip_score"}, **(pdq_params if pdq else {})} if stage == "phash_dedup" else {}
    plan = StagePlan.from_stages([registry.create(stage, params)])
    t = time.perf_counter()
    if mode == "memory":
        n_kept, stats, _, dups, _ = run_memory_global_phase(work, plan, N_SHARDS)
    else:
        n_kept, stats, _, dups, _ = run_sharded_global_phase(work, plan, N_SHARDS, map_fn=map, parallelism=1)
    wall = time.perf_counter() - t
    step = stats[stage]
    inner = step.get("stats", {})
    return {
        "mode": mode,
        "stage": stage,
        "wall_s": round(wall, 2),
        "peak_rss_mb": proc_status_mb("VmHWM"),
        "kept": n_kept,
        "duplicates": inner.get("duplicates"),
        "largest_group": inner.get("largest_group"),
        "rejected": step.get("rejected"),
        "near_hash": inner.get("near_hash", "pdq" if pdq else "phash"),
        "code_path": str(Path(mmcurate.__file__).parent.parent),
    }


def _child(code_dir: Path, work: Path, mode: str, stage: str) -> dict:
    cmd = [sys.executable, str(code_dir / "benchmarks" / "bench_dup_cluster.py"), "--one", str(work), mode, stage]
    if not (code_dir / "benchmarks" / "bench_dup_cluster.py").exists():  # an old commit: this file, its code
        cmd = [sys.executable, __file__, "--one", str(work), mode, stage]
    t = time.perf_counter()
    proc = subprocess.run(
        ["prlimit", f"--as={ADDRESS_SPACE}", *cmd],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(code_dir), "OMP_NUM_THREADS": "2"},
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {
            "mode": mode,
            "stage": stage,
            "failed": tail[0][-300:],
            "process_s": round(time.perf_counter() - t, 1),
            "address_space_limit_gb": ADDRESS_SPACE >> 30,
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000], help="cluster sizes")
    ap.add_argument("--distinct", type=int, default=100_000)
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["same", "near3", "near5"])
    ap.add_argument("--stages", nargs="+", choices=["phash_dedup", "split"], default=["phash_dedup", "split"])
    ap.add_argument("--modes", nargs="+", choices=["memory", "sharded"], default=["memory", "sharded"])
    ap.add_argument("--before", help="also run this commit's code (git worktree) at --before-n")
    ap.add_argument("--before-n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--dir", default="/tmp/mmcurate_bench_dup_cluster")
    ap.add_argument("--limit-gb", type=int, default=10, help="each run's address-space limit")
    ap.add_argument("--prints", type=int, default=TEMPLATE_PRINTS, help="pdq_template_prints: prints in the cluster")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dup_cluster.json"))
    args = ap.parse_args()
    global ADDRESS_SPACE
    ADDRESS_SPACE = args.limit_gb << 30
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], args.one[2])))
        return

    def work_for(case: str, n: int) -> Path:
        prints = f"_p{args.prints}" if case == "pdq_template_prints" else ""
        work = Path(args.dir) / f"{case}{prints}_n{n}_d{args.distinct}" / "_work"
        if not (work / "meta").exists():
            shutil.rmtree(work.parent, ignore_errors=True)
            bits, flips = CASES[case]
            build(
                work,
                *cluster_codes(n, args.distinct, flips, bits=bits),
                dihedral=case.startswith("pdq_") and case != "pdq_same" and case != "pdq_near8",
                prints=args.prints if case == "pdq_template_prints" else 0,
            )
        return work

    def clean(work: Path) -> None:  # what a global run leaves (partitions, rejects) goes; the survivors stay
        for p in work.iterdir():
            if p.name != "meta":
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    rows = []
    runs = [("after", ROOT, n) for n in args.n]
    if args.before:
        old = Path(args.dir) / f"code_{args.before[:12]}"
        if not old.exists():
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
                check=True,
                capture_output=True,
            )
            for so in (ROOT / "mmcurate").glob("_C*.so"):
                shutil.copy2(so, old / "mmcurate" / so.name)
        runs = [("before", old, n) for n in args.before_n] + runs
    for code, code_dir, n in runs:
        for case in args.cases:
            work = work_for(case, n)
            for stage in args.stages:
                for mode in args.modes:
                    clean(work)
                    row = {
                        "code": code,
                        "case": case,
                        "cluster": n,
                        "distinct": args.distinct,
                        "bits": CASES[case][0],
                        **({"prints": args.prints} if case == "pdq_template_prints" else {}),
                        **_child(code_dir, work, mode, stage),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    after = [r for r in rows if r["code"] == "after" and r["case"] == "same" and r["cluster"] == 100_000]
    result = {
        "benchmark": "dup_cluster",
        "target": "100k copies + 100k distinct: < 1500 MB peak RSS and < 60 s, both global modes",
        "target_met": bool(after)
        and all("failed" not in r and r["peak_rss_mb"] < 1500 and r["wall_s"] < 60 for r in after),
        "before_commit": args.before,
        "shards": N_SHARDS,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "note": "each run its own process under prlimit --as; peak RSS is the process's VmHWM; wall_s is the "
        "global phase alone (reading the survivors included). sharded runs use builtin map "
        "(tasks in the driver), so its peak is the whole run's. Shared 2-core machine.",
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"target met: {result['target_met']}; wrote {out}")


if __name__ == "__main__":
    main()
