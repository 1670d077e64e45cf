"""The PDQ-256 scale model: time and peak memory of the self-join at phash_dedup's threshold (22 bits), in memory
mode and partitioned, from 10k codes up, the fit, the projection to 1B, and the chance-link table.

  python benchmarks/bench_pdq_scale.py [--sizes 10000 100000 1000000] [--sampled-sizes 10000000]
                                       [--r 22] [--partitions 64] [--out benchmarks/results/pdq_scale.json]

Codes: ``bench_hamming256.pdq_like_codes`` (photos cluster: median-thresholded projections of image latents,
40% re-encodes of another image), so the join meets the correlated codes and near-duplicate clusters real
photos give, not uniform ones, generated once per size into ``--codes-dir``. Every measurement runs in its own
process that loads them; its peak memory is the VmHWM of the join, reset after the load (so it counts the codes,
32 B each, and the Python baseline, not the generation). Per size:

- ``memory / hamming_pairs``: ``ops.hamming_pairs(codes, r)`` on one node (multi-index hashing, all cores);
- ``memory / near_groups``: ``curate.dedup.near_groups`` (star, pairs counted), the grouping memory mode runs
  (distinct codes, dense near-copy clusters as implicit balls);
- ``partitioned``: ``curate.partitioned_linked_ids`` (the pigeonhole join sharded mode runs: r + 1 chunks, the
  entries spilled to disk by partition, each partition a task), its tasks run one after another here, so the
  figures are the single-core work a cluster spreads over its cores: pass 1 (per input shard) and pass 2 (per
  partition) times, the largest pass-2 task, entries per partition.

``--sampled-sizes``: sizes where only ``--sampled-partitions`` of the partitions are joined (each shard's codes
with an entry for one of them are partitioned, the other partitions' entries dropped): pass 2's total is
extrapolated as (their time) x partitions / sampled, pass 1's as shard 0's time (all its entries written) x
shards, and said so in the row (``extrapolated``). Memory mode runs there only if ``--sizes`` has the size too.

The fit: log-log (t = c * n^alpha) over the measured sizes from 100k up, and the projection to 1B codes from
it. The chance links: n * P(d <= r) for two uniform 256-bit codes, at 1M, 1B and 10B (x 8 with dihedral
matching).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import proc_status_mb

N_SHARDS = 20
KINDS = ("hamming_pairs", "near_groups", "partitioned")


def codes_file(codes_dir: str, n: int, seed: int) -> Path:
    """The codes of size n (generated on first use)."""
    from bench_hamming256 import pdq_like_codes

    path = Path(codes_dir) / f"pdq_like_n{n}_seed{seed}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, pdq_like_codes(n, seed=seed))
    return path


def run_one(kind: str, path: str, r: int, partitions: int, sampled: int, seed: int) -> dict:
    """In the child process: one measurement."""
    # imported before the baseline is taken, so the peak is the join's
    import mmcurate.curate.dedup
    import mmcurate.curate.hamming_partition
    import mmcurate.ops.hamming  # noqa: F401

    codes = np.load(path)
    n = len(codes)
    row = {"kind": kind, "n": n, "r": r, "codes_mb": round(codes.nbytes / 2**20, 1)}
    rss_codes = proc_status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS: the peak below is the join's
    if kind == "hamming_pairs":
        from mmcurate.ops.hamming import hamming_join_plan, hamming_pairs

        t = time.perf_counter()
        pairs, _ = hamming_pairs(codes, r, device="cpu")
        row |= {"seconds": time.perf_counter() - t, "pairs": int(len(pairs))}
        row["plan"] = hamming_join_plan(n, r, bits=256)["description"]
    elif kind == "near_groups":
        from mmcurate.curate.dedup import near_groups

        rank = np.random.default_rng(seed).permutation(n)
        t = time.perf_counter()
        g = near_groups(codes, r, rank, linkage="star", device="cpu", count_pairs=True)
        row |= {"seconds": time.perf_counter() - t, "pairs": int(g.n_pairs), "duplicates": g.n_duplicates}
    else:
        row |= _partitioned(codes, r, partitions, sampled)
    row["peak_rss_mb"] = proc_status_mb("VmHWM")
    row["rss_before_join_mb"] = rss_codes
    row["seconds"] = round(row["seconds"], 3)
    return row


def _partitioned(codes: np.ndarray, r: int, partitions: int, sampled: int) -> dict:
    """The pigeonhole join over N_SHARDS shards; with ``sampled`` (> 0) only that many partitions are kept and
    joined, the others' entries dropped as each shard is written."""
    from mmcurate.curate import hamming_partition as hp

    n = len(codes)
    bounds = np.linspace(0, n, N_SHARDS + 1).astype(np.int64)
    spill = Path(tempfile.mkdtemp(prefix="pdqscale-"))
    keep = set(np.linspace(0, partitions - 1, sampled).round().astype(int).tolist()) if sampled else None
    try:
        pass1 = 0.0
        counts = np.zeros(partitions, np.int64)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            ids, part = np.arange(a, b), codes[a:b]
            if keep is not None and i > 0:  # only the codes with an entry for a kept partition (not timed)
                on = np.zeros(len(part), bool)
                for j, (off, w) in enumerate(hp.chunk_layout(r, 256)):
                    on |= np.isin(hp._route(j, hp._chunk_values(part, off, w), partitions), list(keep))
                ids, part = ids[on], part[on]
            t = time.perf_counter()
            c = hp.partition_codes(ids, part, r, partitions, spill, f"s{i:06d}")
            if keep is None or i == 0:
                pass1 += time.perf_counter() - t
                counts += c
            if keep is not None:
                for d in spill.iterdir():
                    if int(d.name[1:]) not in keep:
                        shutil.rmtree(d)
        if keep is not None:
            pass1 *= N_SHARDS  # shard 0's time, every shard alike
            counts *= N_SHARDS
        task_s, linked, kept_entries = [], 0, []
        for p in sorted(keep) if keep is not None else range(partitions):
            kept_entries.append(sum(np.load(f, mmap_mode="r").shape[0] for f in (spill / f"p{p:05d}").glob("*.npy")))
            t = time.perf_counter()
            links = hp.partition_linked(spill / f"p{p:05d}", r)
            task_s.append(time.perf_counter() - t)
            linked += int(len(links))
        pass2 = float(np.sum(task_s)) * (partitions / len(task_s))
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    layout = hp.chunk_layout(r, 256)
    entry_bytes = hp.entry_dtype(4).itemsize
    return {
        "seconds": pass1 + pass2,
        "pass1_seconds": round(pass1, 3),
        "pass2_seconds": round(pass2, 3),
        "extrapolated": keep is not None,
        "partitions": partitions,
        "partitions_joined": len(task_s),
        "chunks": len(layout),
        "entries": int(counts.sum()),  # sampled: shard 0's times the shards
        "entry_bytes": int(entry_bytes),
        "max_entries_per_partition": int(counts.max()) if keep is None else max(kept_entries),
        "max_task_seconds": round(max(task_s), 3),
        "mean_task_seconds": round(float(np.mean(task_s)), 3),
        "max_task_entries_mb": round(max(kept_entries) * entry_bytes / 2**20, 1),
        "links_in_joined_partitions": linked,
    }


def _child(kind: str, n: int, args) -> dict:
    path = codes_file(args.codes_dir, n, args.seed)
    cmd = [sys.executable, __file__, "--one", kind, str(path), str(args.r), str(args.partitions)]
    cmd += [str(args.sampled_partitions if n in args.sampled_sizes else 0), str(args.seed)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"kind": kind, "n": n, "failed": tail[0][-300:], "process_s": round(time.perf_counter() - t, 1)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Sizes below this are mostly fixed costs (imports, thread pools, per-file spill overhead): not fitted.
FIT_MIN_N = 100_000


def fit(rows: list[dict], project_to: int) -> dict | None:
    """log-log least squares t = c * n^alpha over the rows of at least FIT_MIN_N codes (at least two sizes), its
    largest relative error, and the time it projects at ``project_to``."""
    ok = [r for r in rows if "failed" not in r and r["seconds"] > 0 and r["n"] >= FIT_MIN_N]
    if len({r["n"] for r in ok}) < 2:
        return None
    x = np.log([r["n"] for r in ok])
    y = np.log([r["seconds"] for r in ok])
    alpha, logc = np.polyfit(x, y, 1)
    pred = np.exp(logc + alpha * x)
    err = np.abs(pred / np.exp(y) - 1).max()
    mem = [r["peak_rss_mb"] - r["rss_before_join_mb"] for r in ok]
    return {
        "alpha": round(float(alpha), 3),
        "c": float(f"{np.exp(logc):.4g}"),
        "max_relative_error": round(float(err), 3),
        f"projected_seconds_at_{project_to:.0e}": float(f"{np.exp(logc) * project_to**alpha:.3g}"),
        "join_memory_mb_per_million_codes": [round(m / (r["n"] / 1e6), 1) for m, r in zip(mem, ok)],
    }


def chance_links(r: int) -> dict:
    from mmcurate.curate.dedup import chance_link_probability

    p = chance_link_probability(r, bits=256)
    largest = max(t for t in range(256) if 1e10 * chance_link_probability(t, bits=256) <= 0.01)
    return {
        "threshold": r,
        "p_within": float(f"{p:.3g}"),
        "per_sample": {f"{n:.0e}": float(f"{n * p:.3g}") for n in (1e6, 1e9, 1e10)},
        "per_sample_dihedral_x8": {f"{n:.0e}": float(f"{8 * n * p:.3g}") for n in (1e6, 1e9, 1e10)},
        "largest_threshold_at_1e10_within_0.01": largest,
    }


def _result(rows: list[dict], args) -> dict:
    latest = {(r["kind"], r["n"]): r for r in rows}  # a re-measured row replaces the earlier one
    rows = sorted(latest.values(), key=lambda r: (KINDS.index(r["kind"]), r["n"]))
    return {
        "benchmark": "pdq_scale",
        "codes": "bench_hamming256.pdq_like_codes (photo-like clusters, 40% re-encodes), 256-bit",
        "r": args.r,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "note": "each measurement in its own process; peak_rss_mb = VmHWM over the join (reset after loading the "
        "codes; rss_before_join_mb: the baseline with the codes loaded). partitioned: tasks run serially in one "
        "process (the single-core work); extrapolated rows joined only some partitions. Shared 2-core machine: "
        "timings carry the other jobs' load.",
        "results": rows,
        "fit": {kind: fit([r for r in rows if r.get("kind") == kind], 10**9) for kind in KINDS},
        "chance_links": chance_links(args.r),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--sampled-sizes", type=int, nargs="*", default=[10_000_000])
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--r", type=int, default=22, help="phash_dedup's PDQ threshold")
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--sampled-partitions", type=int, default=4)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codes-dir", default="/tmp/mmcurate_bench_pdq_scale")
    ap.add_argument(
        "--keep-previous", action="store_true", help="keep --out's measured rows, measure only the missing ones"
    )
    ap.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "pdq_scale.json"))
    args = ap.parse_args(argv)
    if args.one:
        kind, path, r, partitions, sampled, seed = args.one
        print(json.dumps(run_one(kind, path, int(r), int(partitions), int(sampled), int(seed))))
        return

    out = Path(args.out)
    rows = []
    if args.keep_previous and out.exists():
        rows = [r for r in json.loads(out.read_text())["results"] if "failed" not in r]
    done = {(r["kind"], r["n"]) for r in rows}
    for n in sorted({*args.sizes, *args.sampled_sizes}):
        for kind in args.kinds:
            if n in args.sampled_sizes and kind != "partitioned" and n not in args.sizes:
                continue  # memory mode is measured up to the sizes that fit the budget
            if (kind, n) in done:
                continue
            row = _child(kind, n, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
            result = _result(rows, args)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")  # after every row: a long run can be stopped
    result = _result(rows, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"fit": result["fit"], "chance_links": result["chance_links"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
