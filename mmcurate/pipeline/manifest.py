"""The run's manifest (manifest.json): what ran, on which input, what it gave, and how long each part took.

    manifest_version, run (times, versions, recipe, build, peak memory, the executor's own fields),
    counts (read = kept + rejected, or the run fails), stages (per map and global step: in, kept,
    rejected, reasons, seconds), timings_s (per phase), inputs and outputs (sha256), provenance (recipe hash,
    input fingerprint, each model's weights hash: pipeline.provenance), shard_errors, warnings

Also the JSON writing every run record shares (done records, run.json, the manifest).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import mmcurate
from mmcurate.pipeline.diagnosis import run_warnings
from mmcurate.pipeline.global_phase import GlobalPhaseResult, new_stat
from mmcurate.pipeline.provenance import PROVENANCE, provenance
from mmcurate.pipeline.recipe import Recipe
from mmcurate.pipeline.reuse import MANIFEST_COLUMNS

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"


def build_manifest(
    recipe: Recipe,
    out: Path,
    *,
    run_info: dict,
    started: float,
    t_start: float,
    shards: list[str],
    records: list[dict],
    map_step_names: list[str],
    phase: GlobalPhaseResult,
    kept: int,
    rejected: int,
    shard_files: list[tuple],
    timings: dict,
    reuse=None,
) -> dict:
    """The manifest of a run whose outputs are written. `started` is the wall clock and `t_start` the
    perf_counter at its start; `records` the shards' done records; `kept` and `rejected` the samples written
    to samples.parquet and rejects.parquet; `shard_files` the output shards' (path, samples, sha256)."""
    from mmcurate.io import sha256_file

    read = sum(r["read"] for r in records)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.perf_counter() - t_start, 3),
            "mmcurate_version": mmcurate.__version__,
            "recipe": recipe.to_dict(),
            "build_info": mmcurate.build_info(),
            "peak_rss_mb": peak_rss_mb(),
            "python": sys.version.split()[0],
            **run_info,
        },
        "counts": {
            "read": read,
            "kept": kept,
            "rejected": rejected,
            "accounting_ok": read == kept + rejected,
        },
        "stages": merge_stage_stats(records, map_step_names, phase.stats),
        "timings_s": rounded(timings),
        "inputs": [
            {"shard": s, "samples": r["read"], "sha256": sha256_file(s) if os.path.isfile(s) else None}
            for s, r in zip(shards, records)
        ],
        "outputs": [{"path": os.path.relpath(p, out), "samples": n, "sha256": h} for p, n, h in shard_files]
        + [
            {"path": name, "sha256": sha256_file(out / name)}
            for name in ("samples.parquet", "rejects.parquet", "duplicates.parquet")
        ],
        "shard_errors": [e for r in records for e in r.get("shard_errors", [])],
    }
    manifest[PROVENANCE] = provenance(recipe, manifest["inputs"])
    if reuse is not None:  # pipeline.reuse: what the next run from this output may reuse, and what this one did
        import pyarrow.parquet as pq

        stored = set(pq.read_schema(out / "samples.parquet").names)
        manifest[MANIFEST_COLUMNS] = {c: v for c, v in sorted(reuse.columns.items()) if c in stored}
    manifest["warnings"] = run_warnings(manifest)
    return manifest


def merge_stage_stats(records: list[dict], map_step_names: list[str], global_stats: dict) -> list[dict]:
    """The manifest's `stages`: the map steps' counters summed over the shards' done records, in recipe
    order, then the global steps'."""
    merged = {name: new_stat() for name in map_step_names}
    for rec in records:
        for name, st in rec["stages"].items():
            m = merged.setdefault(name, new_stat())
            for k in ("in", "kept", "rejected", "seconds", "reused"):
                m[k] += st.get(k, 0)  # "reused": absent from the done records of runs before it
            m["reasons"].update(st["reasons"])
    out = []
    for name in map_step_names:
        m = merged[name]
        out.append(
            {
                "name": name,
                "kind": "map",
                **{k: m[k] for k in ("in", "kept", "rejected")},
                "seconds": round(m["seconds"], 4),
                "reasons": dict(m["reasons"]),
                "samples_per_s": round(m["in"] / m["seconds"], 1) if m["seconds"] else None,
                **({"reused": m["reused"]} if m["reused"] else {}),  # rows decided on stored columns
            }
        )
    for name, g in global_stats.items():
        out.append(
            {
                "name": name,
                "kind": "global",
                "mode": g.get("mode", "memory"),
                **{k: g[k] for k in ("in", "kept", "rejected")},
                "seconds": round(g["seconds"], 4),
                "reasons": dict(g["reasons"]),
                "stats": g.get("stats", {}),
                "samples_per_s": round(g["in"] / g["seconds"], 1) if g["seconds"] else None,
            }
        )
    return out


def rounded(timings: dict) -> dict:
    return {k: round(v, 3) for k, v in timings.items()}


def peak_rss_mb() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"driver": round(self_kb / 1024, 1), "largest_worker": round(child_kb / 1024, 1)}


def write_json(path: Path, obj) -> None:
    """Atomically, sorted and indented, as every run record is written."""
    from mmcurate.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default))


def json_default(o):
    """What json.dumps meets in run records beyond plain JSON: counters, numpy scalars, paths."""
    if isinstance(o, Counter):
        return dict(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
