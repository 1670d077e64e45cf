"""Streaming semantic dedup (``semantic_dedup_streaming`` over .npy shards) vs the in-memory
``semantic_dedup``: seconds per pass and peak RSS, at several n.

Data: synthetic d=512 unit embeddings (clustered, 20% planted near-duplicates at a spread of distances, as
in bench_semantic.py), generated shard by shard and written as .npy shards of ``--shard-rows`` rows, so
the generator never holds more than one shard. Each method runs in its own subprocess so that its peak RSS
(VmHWM) is its own: the streaming run reads the shards through mmap'd chunks; the in-memory run
loads every shard into one [n, d] array, runs k-means on it and then ``semantic_dedup``. Both use
``n_clusters = n / --points-per-cluster`` and train k-means on the same number of rows (``--sample-size``,
fixed in n), so the streaming run's resident set should stay roughly constant in n apart from its
per-sample result arrays (~25 bytes per sample), while the in-memory run grows by 4 * d bytes per sample.
The in-memory child also reruns ``semantic_dedup`` on the streaming run's centroids and labels and checks
that the keep masks and witnesses are identical. JSON to benchmarks/results/semantic_stream.json.

    python benchmarks/bench_semantic_stream.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_shards(root: str, n: int, d: int, shard_rows: int, dup_frac: float = 0.2, seed: int = 0) -> list[str]:
    """Clustered unit vectors with near-duplicates of rows of the same shard, ``shard_rows`` per .npy file."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(10, n // 2000), d)).astype(np.float32)
    paths = []
    for i, s in enumerate(range(0, n, shard_rows)):
        m = min(shard_rows, n - s)
        n_dup = int(m * dup_frac)
        n_base = m - n_dup
        x = np.empty((m, d), np.float32)
        x[:n_base] = centers[rng.integers(0, len(centers), n_base)] * 0.15 + rng.standard_normal(
            (n_base, d), np.float32
        )
        x[:n_base] /= np.linalg.norm(x[:n_base], axis=1, keepdims=True)
        src = rng.integers(0, n_base, n_dup)
        scale = rng.uniform(0.0, 0.5, n_dup).astype(np.float32)[:, None] / np.sqrt(d)
        x[n_base:] = x[src] + scale * rng.standard_normal((n_dup, d), dtype=np.float32)
        x[n_base:] /= np.linalg.norm(x[n_base:], axis=1, keepdims=True)
        paths.append(os.path.join(root, f"emb-{i:05d}.npy"))
        np.save(paths[-1], x[rng.permutation(m)])
    return paths


def _rss_mb() -> float:
    """This process's peak RSS in MiB. VmHWM belongs to the address space, which exec replaces; ru_maxrss
    would also count the parent's RSS at fork time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_stream(args, paths):
    from mmcurate import index as mindex
    from mmcurate.curate.semantic_stream import npy_shards, semantic_dedup_streaming

    mindex.resolve_device("cpu")  # load faiss before the baseline
    base = _rss_mb()
    shards = npy_shards(paths)
    n = sum(s.count for s in shards)
    t0 = time.perf_counter()
    r = semantic_dedup_streaming(
        shards,
        eps=args.eps,
        n_clusters=max(10, n // args.points_per_cluster),
        sample_size=min(n, args.sample_size),
        device=args.device,
        seed=0,
        spill_dir=args.spill_dir,
        chunk_rows=args.chunk_rows,
    )
    wall = time.perf_counter() - t0
    np.savez(args.result, keep=r.keep, duplicate_of=r.duplicate_of, cluster=r.cluster, centroids=r.centroids)
    st = r.stats
    return {
        "method": "streaming",
        "wall_s": round(wall, 3),
        "seconds": st["seconds"],
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_after_imports_mb": round(base, 1),
        "n_clusters": st["n_clusters"],
        "sample_size": st["sample_size"],
        "n_partitions": st["n_partitions"],
        "largest_cluster": st["largest_cluster_rows"],
        "peak_task_rows": st["peak_task_rows"],
        "spill_mb": round(st["spill_bytes"] / 2**20, 1),
        "n_duplicates": r.n_duplicates,
    }


def child_memory(args, paths):
    from mmcurate import index as mindex
    from mmcurate.curate.semantic import semantic_dedup

    mindex.resolve_device("cpu")
    base = _rss_mb()
    t0 = time.perf_counter()
    counts = [np.load(p, mmap_mode="r").shape for p in paths]
    n, d = sum(c[0] for c in counts), counts[0][1]
    x = np.empty((n, d), np.float32)
    s = 0
    for p, (m, _) in zip(paths, counts):
        x[s : s + m] = np.load(p, mmap_mode="r")
        s += m
    t_load = time.perf_counter() - t0
    k = max(10, n // args.points_per_cluster)
    t0 = time.perf_counter()
    # the same number of training rows as the streaming run's sample, so k-means times compare
    train = min(n, args.sample_size)
    centroids, labels = mindex.kmeans(
        x, k, niter=20, spherical=True, seed=0, device=args.device, max_points_per_centroid=-(-train // k)
    )
    t_kmeans = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = semantic_dedup(x, eps=args.eps, device=args.device, clusters=(centroids, labels))
    t_dedup = time.perf_counter() - t0
    peak = _rss_mb()
    out = {
        "method": "in_memory",
        "wall_s": round(t_load + t_kmeans + t_dedup, 3),
        "seconds": {"load_s": round(t_load, 3), "kmeans_s": round(t_kmeans, 3), "dedup_s": round(t_dedup, 3)},
        "peak_rss_mb": round(peak, 1),
        "rss_after_imports_mb": round(base, 1),
        "n_clusters": k,
        "largest_cluster": int(np.bincount(labels).max()),
        "n_duplicates": r.n_duplicates,
    }
    if os.path.exists(args.result):  # same clusters as the streaming run -> must be the same duplicates
        z = np.load(args.result)
        ref = semantic_dedup(
            x, eps=args.eps, device=args.device, clusters=(z["centroids"], z["cluster"].astype(np.int64))
        )
        out["same_as_streaming_on_its_clusters"] = bool(
            np.array_equal(ref.keep, z["keep"]) and np.array_equal(ref.duplicate_of, z["duplicate_of"])
        )
    return out


def run_child(mode: str, args, workdir: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        mode,
        "--workdir",
        workdir,
        "--eps",
        str(args.eps),
        "--points-per-cluster",
        str(args.points_per_cluster),
        "--sample-size",
        str(args.sample_size),
        "--device",
        args.device,
        "--chunk-rows",
        str(args.chunk_rows),
        "--result",
        os.path.join(workdir, "stream_result.npz"),
        "--spill-dir",
        workdir,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    if proc.returncode:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--points-per-cluster", type=int, default=1000)
    ap.add_argument("--sample-size", type=int, default=100_000)
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-memory", action="store_true", help="only the streaming run")
    ap.add_argument("--workdir", default=None, help="where the shards go (default: a temp dir, removed)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "semantic_stream.json"))
    ap.add_argument("--child", choices=["stream", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--spill-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        paths = sorted(os.path.join(args.workdir, f) for f in os.listdir(args.workdir) if f.startswith("emb-"))
        row = (child_stream if args.child == "stream" else child_memory)(args, paths)
        print(json.dumps(row), flush=True)
        return

    import faiss

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        workdir = tempfile.mkdtemp(prefix=f"bench-semstream-{n}-", dir=args.workdir)
        try:
            t0 = time.perf_counter()
            write_shards(workdir, n, args.d, args.shard_rows)
            gen = time.perf_counter() - t0
            res = {
                "n": n,
                "d": args.d,
                "shard_rows": args.shard_rows,
                "generate_s": round(gen, 1),
                "streaming": run_child("stream", args, workdir),
            }
            print(json.dumps(res), flush=True)
            if not args.skip_memory:
                res["in_memory"] = run_child("memory", args, workdir)
                print(json.dumps(res["in_memory"]), flush=True)
            rows.append(res)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus(),
            "numpy": np.__version__,
        },
        "note": "seconds per pass; peak_rss_mb is each method's own subprocess (VmHWM), "
        "rss_after_imports_mb its baseline after importing numpy+faiss. Both train k-means on "
        f"min(n, {args.sample_size}) rows (streaming: its id-hash sample; in-memory: "
        "index.kmeans's own draw, all rows resident); the machine was shared with other jobs.",
        "results": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if os.path.exists(args.out):  # keep the sizes measured earlier (e.g. 1M run separately)
        with open(args.out) as f:
            old = json.load(f)
        done = {r["n"] for r in rows}
        out["results"] = sorted([r for r in old.get("results", []) if r["n"] not in done] + rows, key=lambda r: r["n"])
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
