"""The local executor: streams shards through the map stages, runs the global steps, writes the output.

Three phases, each resumable:
  1. map     per input shard (in parallel worker processes when workers > 1): read batches, run the map
             stages (and the map parts of global stages) in recipe order, write the survivors' metadata
             (no image bytes) and the rejects to _work/, atomically, then a per-shard done record.
  2. global  the global stages, in recipe order, over the survivors' metadata of all shards (pipeline.global_phase):
             in memory (the columns they need for all survivors in one table) or, with run: {global_mode:
             sharded}, through per-shard and per-partition tasks that never hold it (pipeline.global_sharded);
             same outputs.
  3. write   re-read the input shards and copy the kept samples' original bytes into output shards
             (deterministic: the same input gives byte-identical shards), then samples/rejects/
             duplicates parquet, thumbnails, manifest and report.
Memory is bounded by one batch per worker plus the metadata of the survivors (never the images).
A run killed at any point and re-run with resume=True skips finished shards and ends with the same
outputs as an uninterrupted run. Accounting (kept + rejected == read) is checked per shard and per run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import mmcurate
from mmcurate.pipeline.diagnosis import run_warnings
from mmcurate.pipeline.global_phase import (
    GlobalPhaseResult,
    new_stat,
    run_memory_global_phase,
    run_sharded_global_phase,
)
from mmcurate.pipeline.output_dir import (
    check_apart_from_input,
    check_done_record,
    file_record,
    forget_shard,
    input_paths,
    log,
    preflight_stages,
    read_done_record,
    recipe_identity,
)
from mmcurate.pipeline.output_dir import prepare as prepare_output
from mmcurate.pipeline.read_step import READ_STEP, ReadRejects, shard_errors
from mmcurate.pipeline.recipe import Recipe, parse_recipe
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import AccountingError, GlobalStage, MapStage, StageError

WORK = "_work"
MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Stage plan
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class StagePlan:
    map_steps: list  # (stats name, MapStage) in recipe order; global stages contribute their map part
    global_steps: list  # GlobalStage in recipe order

    @classmethod
    def from_stages(cls, stages) -> StagePlan:
        # The reader's verdicts (unreadable samples, damaged shard tails) are rejected first, as stage "read".
        map_steps, global_steps = [(READ_STEP, ReadRejects())], []
        for st in stages:
            if isinstance(st, GlobalStage):
                part = getattr(st, "map_part", None)
                if part is not None:
                    map_steps.append((f"{st.name}.map", part))
                global_steps.append(st)
            elif isinstance(st, MapStage):
                map_steps.append((st.name, st))
            else:
                raise StageError(f"{st!r} is not a stage")
        return cls(map_steps, global_steps)


# ---------------------------------------------------------------------------------------------
# Phase 1: map (runs in worker processes or in-process)
# ---------------------------------------------------------------------------------------------
_WORKER = {}


def _worker_init(recipe_dict: dict, threads: int | None):
    if threads:
        os.environ["MMCURATE_NUM_THREADS"] = str(threads)
    recipe = parse_recipe(recipe_dict)
    _WORKER["recipe"] = recipe
    _WORKER["plan"] = _setup_plan(recipe)


def _setup_plan(recipe: Recipe) -> StagePlan:
    plan = StagePlan.from_stages(recipe.build_stages())
    for _, st in plan.map_steps:
        st.setup()
    return plan


def _worker_run_shard(shard_index: int, shard: str, work_dir: str) -> dict:
    return run_map_shard(_WORKER["recipe"], _WORKER["plan"], shard_index, shard, Path(work_dir))


def run_map_shard(recipe: Recipe, plan: StagePlan, shard_index: int, shard: str, work: Path) -> dict:
    """Runs the map steps over one input shard and writes its survivors and rejects to work/."""
    from mmcurate.io import open_reader

    reader = open_reader(recipe.input_path, format=recipe.input_format, **recipe.input_options)
    stats = {name: new_stat() for name, _ in plan.map_steps}
    kept_parts, reject_parts = [], []
    n_read = 0
    t_read = 0.0
    t0 = time.perf_counter()
    for batch in reader.read(shard, batch_size=recipe.batch_size):
        t_read += time.perf_counter() - t0
        n_read += batch.num_rows
        for name, stage in plan.map_steps:
            if batch.num_rows == 0:
                break
            st = stats[name]
            st["in"] += batch.num_rows
            t = time.perf_counter()
            res = stage.process(batch)
            st["seconds"] += time.perf_counter() - t
            if res.kept.num_rows + res.rejected.num_rows != batch.num_rows:
                raise AccountingError(
                    f"stage {name} on shard {shard}: {batch.num_rows} in, "
                    f"{res.kept.num_rows} kept + {res.rejected.num_rows} rejected"
                )
            st["kept"] += res.kept.num_rows
            st["rejected"] += res.rejected.num_rows
            if res.rejected.num_rows:
                st["reasons"].update(res.rejected.column("reason").to_pylist())
                reject_parts.append(res.rejected.cast(REJECTS_SCHEMA))
            batch = res.kept
        if batch.num_rows:
            kept_parts.append(batch.drop_columns(["image"]) if "image" in batch.column_names else batch)
        t0 = time.perf_counter()
    return write_map_shard(work, shard_index, shard, kept_parts, reject_parts, n_read, t_read, stats)


def write_map_shard(
    work: Path,
    shard_index: int,
    shard: str,
    kept_parts: list,
    reject_parts: list,
    n_read: int,
    t_read: float,
    stats: dict,
) -> dict:
    """A shard's map-phase files: survivors' metadata (per-batch kept tables, in batch order), rejects (per batch,
    per step, in that order) and, last, the done record with the per-step counters. Shared by the executors, so
    what they leave in work/ is the same."""
    from mmcurate.io import write_parquet_atomic

    survivors = _concat(kept_parts)
    rejects = pa.concat_tables(reject_parts) if reject_parts else REJECTS_SCHEMA.empty_table()
    if (survivors.num_rows if survivors is not None else 0) + rejects.num_rows != n_read:
        raise AccountingError(
            f"shard {shard}: read {n_read}, survivors {survivors.num_rows if survivors else 0}, "
            f"rejected {rejects.num_rows}"
        )
    name = f"{shard_index:05d}"
    files = {"meta": None}  # each file's size and rows, for resume to check (output_dir.check_done_record)
    if survivors is not None:
        write_parquet_atomic(survivors, work / "meta" / f"{name}.parquet")
        files["meta"] = file_record(work / "meta" / f"{name}.parquet", survivors.num_rows)
    write_parquet_atomic(rejects, work / "rejects" / f"{name}.parquet")
    files["rejects"] = file_record(work / "rejects" / f"{name}.parquet", rejects.num_rows)
    record = {
        "shard": shard,
        "index": shard_index,
        "read": n_read,
        "files": files,
        "survivors": survivors.num_rows if survivors is not None else 0,
        "rejected": rejects.num_rows,
        "read_seconds": t_read,
        "shard_errors": shard_errors(rejects),
        "stages": {k: {**v, "reasons": dict(v["reasons"])} for k, v in stats.items()},
    }
    _atomic_json(work / "done" / f"{name}.json", record)  # last: its presence means the shard is complete
    return record


def _check_shard_errors(records: list[dict], policy: str):
    """run.on_shard_error: fail stops a run whose input had a shard that could not be read to its end."""
    errors = [e for r in records for e in r.get("shard_errors", [])]
    if errors and policy == "fail":
        raise StageError(
            f"{len(errors)} input shard(s) could not be read to the end (run.on_shard_error: fail), "
            f"first: {errors[0]['detail']}; fix or remove the shard, or set run.on_shard_error: warn "
            f"to curate what can be read"
        )


def _sample_ids(table: pa.Table) -> pa.Array:
    """(source, key) as one string: keys are only unique within a shard."""
    return pc.binary_join_element_wise(table.column("source"), table.column("key"), "\x00")


def _concat(parts: list) -> pa.Table | None:
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def _atomic_json(path: Path, obj):
    from mmcurate.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(o):
    if isinstance(o, Counter):
        return dict(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# The executor
# ---------------------------------------------------------------------------------------------
class LocalExecutor:
    def __init__(
        self,
        recipe: Recipe,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        keep_work: bool = False,
    ):
        self.recipe = recipe
        self.out = Path(recipe.output_path)
        self.work = self.out / WORK
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress and sys.stderr.isatty() or progress == "always"
        self.keep_work = keep_work
        self._lock = None  # output_dir.RunLock, held from before the first write to the end of the run

    def _run_info(self) -> dict:
        """What the manifest's `run` records about the executor."""
        return {"executor": "local"}

    # -- phase control --------------------------------------------------------------------------
    def run(self) -> dict:
        from mmcurate.io import open_reader

        started = time.time()
        t_start = time.perf_counter()
        # A bad input, reader option or stage set-up fails here, before the output is touched.
        reader = open_reader(self.recipe.input_path, format=self.recipe.input_format, **self.recipe.input_options)
        shards = reader.shards()
        if not shards:
            raise StageError(f"no input shards found at {self.recipe.input_path!r}")
        preflight_stages(self.recipe.build_stages())
        check_apart_from_input(self.out, input_paths(self.recipe.input_path, reader, shards))
        finished = self._prepare_output_dir(shards)
        if finished is not None:
            return finished
        try:
            return self._run_locked(reader, shards, started, t_start)
        finally:
            self._lock.release(cleanup=True)  # the lock file goes too (it stays only after a kill)

    def _run_locked(self, reader, shards: list[str], started: float, t_start: float) -> dict:
        self._check_or_write_run_record(shards)
        timings = {}

        t = time.perf_counter()
        records = self._map_phase(reader, shards)
        timings["map"] = time.perf_counter() - t
        _check_shard_errors(records, self.recipe.on_shard_error)

        t = time.perf_counter()
        plan = StagePlan.from_stages(self.recipe.build_stages())
        phase = self._global_phase(plan, len(shards))
        timings["global"] = time.perf_counter() - t

        t = time.perf_counter()
        manifest = self._write_phase(reader, shards, records, plan, phase, timings, started, t_start)
        return manifest

    def _prepare_output_dir(self, shards: list[str]) -> dict | None:
        """Lock the output and make it ready (see pipeline.output_dir); the finished run's manifest when
        --resume finds this run already finished."""
        self._lock, finished = prepare_output(
            self.out, resume=self.resume, overwrite=self.overwrite, identity=self._recipe_identity(), shards=shards
        )
        return finished

    def _check_or_write_run_record(self, shards: list[str]):
        """A resumed run must be the same run: same recipe (minus run-time knobs) and the same shard list."""
        record = {"recipe": self._recipe_identity(), "shards": shards}
        path = self.work / "run.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(record)):
                raise StageError(
                    f"{self.out} holds an unfinished run of a different recipe or input; use --overwrite to discard it"
                )
        else:
            _atomic_json(path, record)

    def _recipe_identity(self) -> dict:
        return recipe_identity(self.recipe.to_dict())

    # -- phase 1 --------------------------------------------------------------------------------
    def _done_and_todo(self, shards: list[str]) -> tuple[dict, list]:
        """The done records of shards an earlier run finished (resume), and the (index, shard) still to map."""
        done_dir = self.work / "done"
        records: dict[int, dict] = {}
        todo = []
        for i, shard in enumerate(shards):
            f = done_dir / f"{i:05d}.json"
            if f.exists():
                rec = read_done_record(f)
                why = check_done_record(self.work, rec, shard)
                if why is None:
                    records[i] = rec
                    continue
                log(f"resume: mapping shard {i} ({shard}) again: {why}")
            forget_shard(self.work, i)  # no stale files of an earlier try
            todo.append((i, shard))
        return records, todo

    def _map_phase(self, reader, shards: list[str]) -> list[dict]:
        records, todo = self._done_and_todo(shards)
        total = sum((reader.count(s) or 0) for _, s in todo) or None
        bar = self._bar(total, "map", initial=0)
        workers = min(self.recipe.workers, len(todo)) if todo else 0
        if workers <= 1:
            plan = _setup_plan(self.recipe) if todo else None
            for i, shard in todo:
                rec = run_map_shard(self.recipe, plan, i, shard, self.work)
                records[i] = rec
                self._bar_update(bar, rec)
        else:
            threads = self.recipe.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
            ctx = get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_worker_init, initargs=(self.recipe.to_dict(), threads)
            ) as pool:
                pending = {pool.submit(_worker_run_shard, i, shard, str(self.work)) for i, shard in todo}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        rec = fut.result()
                        records[rec["index"]] = rec
                        self._bar_update(bar, rec)
        if bar is not None:
            bar.close()
        return [records[i] for i in range(len(shards))]

    def _bar(self, total, desc, initial=0):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="sample", initial=initial, dynamic_ncols=True, file=sys.stderr)

    def _bar_update(self, bar, rec):
        if bar is None:
            return
        bar.update(rec["read"])
        rates = {k: (v["in"] / v["seconds"] if v["seconds"] else 0.0) for k, v in rec["stages"].items()}
        bar.set_postfix_str(" ".join(f"{k}={r:,.0f}/s" for k, r in rates.items()), refresh=False)

    # -- phase 2 --------------------------------------------------------------------------------
    #: what run.global_mode "auto" means for this executor: one process holds the survivors' columns
    AUTO_GLOBAL_MODE = "memory"

    @property
    def global_mode(self) -> str:
        mode = self.recipe.global_mode
        return self.AUTO_GLOBAL_MODE if mode == "auto" else mode

    def _global_phase(self, plan: StagePlan, n_shards: int):
        if self.global_mode == "sharded":
            from mmcurate.pipeline.global_sharded import local_map

            workers = self.recipe.workers
            threads = self.recipe.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
            with local_map(workers, threads) as map_fn:
                return run_sharded_global_phase(self.work, plan, n_shards, map_fn=map_fn, parallelism=workers)
        return run_memory_global_phase(self.work, plan, n_shards)

    # -- phase 3 --------------------------------------------------------------------------------
    def _write_phase(self, reader, shards, records, plan, phase: GlobalPhaseResult, timings, started, t_start) -> dict:
        """Shard by shard: the survivors' metadata from _work/, minus the global rejects, joined with the
        global columns; the input shard re-read for the original bytes. Memory holds one shard."""
        n_kept, global_stats, global_rejects, duplicates, extra_cols = phase
        from mmcurate.io import ShardWriter, sha256_file
        from mmcurate.io.atomic import atomic_output

        t = time.perf_counter()
        meta_files = [self.work / "meta" / f"{i:05d}.parquet" for i in range(len(shards))]
        out_schema = _samples_schema([pq.read_schema(f) for f in meta_files if f.exists()], extra_cols.schema_tables())
        gone_ids = _sample_ids(global_rejects) if global_rejects.num_rows else None

        collector = _make_thumbnail_collector()
        wanted_dup_keys = collector.wanted_keys(duplicates) if collector is not None else set()
        global_rejects_by_source = {}
        if collector is not None and global_rejects.num_rows:
            for src in set(global_rejects.column("source").to_pylist()):
                global_rejects_by_source[src] = global_rejects.filter(pc.equal(global_rejects.column("source"), src))

        # out/shards/NNNNN.tar, or out/shards/<split>/NNNNN.tar when a split stage assigned splits.
        by_split = "split" in out_schema.names
        writers: dict = {}
        split_counts: dict = {}

        def writer_for(split):
            if split not in writers:
                writers[split] = ShardWriter(
                    self.out, self.recipe.shard_size, subdir=f"shards/{split}" if by_split else "shards"
                )
                split_counts[split] = 0
            return writers[split]

        n_written = 0
        n_rejected = 0
        with (
            atomic_output(self.out / "samples.parquet") as samples_f,
            atomic_output(self.out / "rejects.parquet") as rejects_f,
        ):
            samples_pw = pq.ParquetWriter(samples_f, out_schema)
            rejects_pw = pq.ParquetWriter(rejects_f, REJECTS_SCHEMA)
            for i, shard in enumerate(shards):
                rej_path = self.work / "rejects" / f"{i:05d}.parquet"
                rej = pq.read_table(rej_path) if rej_path.exists() else REJECTS_SCHEMA.empty_table()
                rej_keys = rej.column("key").to_pylist()
                if rej.num_rows:
                    rejects_pw.write_table(rej.cast(REJECTS_SCHEMA))
                    n_rejected += rej.num_rows
                meta = pq.read_table(meta_files[i]) if meta_files[i].exists() else None
                rows = np.arange(meta.num_rows) if meta is not None else None
                if meta is not None and gone_ids is not None:
                    alive = pc.invert(pc.is_in(_sample_ids(meta), value_set=gone_ids))
                    meta = meta.filter(alive)
                    rows = rows[alive.to_numpy(zero_copy_only=False)]
                if meta is not None:
                    meta = extra_cols.join(i, meta, rows)
                kept_rows = {}
                if meta is not None:
                    kept_rows = {
                        (s_, k): r
                        for r, (k, s_) in enumerate(
                            zip(meta.column("key").to_pylist(), meta.column("source").to_pylist())
                        )
                    }
                rows_meta = _rows_for_output(meta) if meta is not None and meta.num_rows else {}
                written, names = [], []  # this shard's kept rows and their output shards, in write order
                splits = meta.column("split").to_pylist() if by_split and meta is not None else None
                for batch in reader.read(shard, batch_size=self.recipe.batch_size):
                    keys = batch.column("key").to_pylist()
                    srcs = batch.column("source").to_pylist()
                    rows = [kept_rows.get((s_, k)) for k, s_ in zip(keys, srcs)]
                    idx = [j for j, r in enumerate(rows) if r is not None]
                    if collector is not None:
                        self._offer_thumbnails(
                            collector, batch, keys, srcs, rej, rej_keys, wanted_dup_keys, global_rejects_by_source
                        )
                    groups: dict = {}
                    for j in idx:  # per split, keeping input order within each
                        groups.setdefault(splits[rows[j]] if splits else None, []).append(j)
                    for split, js in groups.items():
                        w = writer_for(split)
                        sub_rows = [rows[j] for j in js]
                        w.write(_output_table(batch.take(js), rows_meta, sub_rows))
                        base = split_counts[split]
                        prefix = f"{split}/" if by_split else ""
                        names += [
                            prefix + w.shard_path(c // self.recipe.shard_size).name for c in range(base, base + len(js))
                        ]
                        split_counts[split] = base + len(js)
                        written += sub_rows
                n_meta = meta.num_rows if meta is not None else 0
                if len(written) != n_meta:
                    raise AccountingError(
                        f"shard {shard}: {n_meta} samples kept but {len(written)} found again "
                        f"in the input (was the input changed during the run?)"
                    )
                if written:
                    samples_pw.write_table(_samples_table(meta.take(written), names, out_schema))
                    n_written += len(written)
            if global_rejects.num_rows:
                rejects_pw.write_table(global_rejects)
                n_rejected += global_rejects.num_rows
            samples_pw.close()
            rejects_pw.close()
        shard_files = [f for split in sorted(writers, key=str) for f in writers[split].close()]
        if not writers:  # nothing kept: still leave an (empty) shards/ directory
            (self.out / "shards").mkdir(parents=True, exist_ok=True)
        if n_written != n_kept:
            raise AccountingError(f"{n_kept} samples survived the global steps but {n_written} were written")
        timings["write_shards"] = time.perf_counter() - t

        t = time.perf_counter()
        from mmcurate.io import write_parquet_atomic

        write_parquet_atomic(duplicates, self.out / "duplicates.parquet")
        if collector is not None:
            collector.write(self.out / "thumbs.parquet")

        read = sum(r["read"] for r in records)
        stage_stats = self._merge_stage_stats(records, plan, global_stats)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "run": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration_s": round(time.perf_counter() - t_start, 3),
                "mmcurate_version": mmcurate.__version__,
                "recipe": self.recipe.to_dict(),
                "build_info": mmcurate.build_info(),
                "peak_rss_mb": _peak_rss_mb(),
                "python": sys.version.split()[0],
                **self._run_info(),
            },
            "counts": {
                "read": read,
                "kept": n_written,
                "rejected": n_rejected,
                "accounting_ok": read == n_written + n_rejected,
            },
            "stages": stage_stats,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "inputs": [
                {"shard": s_, "samples": r["read"], "sha256": sha256_file(s_) if os.path.isfile(s_) else None}
                for s_, r in zip(shards, records)
            ],
            "outputs": [{"path": os.path.relpath(p, self.out), "samples": n, "sha256": h} for p, n, h in shard_files]
            + [
                {"path": name, "sha256": sha256_file(self.out / name)}
                for name in ("samples.parquet", "rejects.parquet", "duplicates.parquet")
            ],
            "shard_errors": [e for r in records for e in r.get("shard_errors", [])],
        }
        manifest["warnings"] = run_warnings(manifest)
        if read != n_written + n_rejected:
            _atomic_json(self.out / "manifest.json", manifest)
            raise AccountingError(f"read {read} != kept {n_written} + rejected {n_rejected}")
        timings["write_tables"] = time.perf_counter() - t
        manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        _atomic_json(self.out / "manifest.json", manifest)
        if self.recipe.report:
            t = time.perf_counter()
            from mmcurate.report import write_report

            write_report(self.out)
            manifest["timings_s"]["report"] = round(time.perf_counter() - t, 3)
            manifest["run"]["peak_rss_mb"] = _peak_rss_mb()
            _atomic_json(self.out / "manifest.json", manifest)
        if not self.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return manifest

    @staticmethod
    def _offer_thumbnails(collector, batch, keys, srcs, rej, rej_keys, wanted_dup_keys, global_rejects_by_source):
        """Hand the report's thumbnail collector the rows it can use: this shard's rejects (map and global)
        and members of the duplicate groups it will show."""
        shard_global = [global_rejects_by_source[x] for x in set(srcs) if x in global_rejects_by_source]
        interesting = set(rej_keys) | wanted_dup_keys
        for g in shard_global:
            interesting.update(g.column("key").to_pylist())
        pick = [j for j, k in enumerate(keys) if k in interesting]
        if not pick:
            return
        sub = batch.take(pick).select(["key", "image", "caption"])
        sub_keys = sub.column("key").to_pylist()
        images = dict(zip(sub_keys, sub.column("image").to_pylist()))
        captions = dict(zip(sub_keys, sub.column("caption").to_pylist()))
        for g in shard_global:
            collector.offer_rejects(g, images, captions)
        if rej.num_rows:
            collector.offer_rejects(rej, images, captions)
        if wanted_dup_keys:
            collector.offer_group_members(wanted_dup_keys, sub.select(["key", "image"]))

    def _merge_stage_stats(self, records, plan: StagePlan, global_stats) -> list[dict]:
        merged = {name: new_stat() for name, _ in plan.map_steps}
        for rec in records:
            for name, st in rec["stages"].items():
                m = merged.setdefault(name, new_stat())
                for k in ("in", "kept", "rejected", "seconds"):
                    m[k] += st[k]
                m["reasons"].update(st["reasons"])
        out = []
        for name, _ in plan.map_steps:
            m = merged[name]
            out.append(
                {
                    "name": name,
                    "kind": "map",
                    **{k: m[k] for k in ("in", "kept", "rejected")},
                    "seconds": round(m["seconds"], 4),
                    "reasons": dict(m["reasons"]),
                    "samples_per_s": round(m["in"] / m["seconds"], 1) if m["seconds"] else None,
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


# ---------------------------------------------------------------------------------------------
# Output rows
# ---------------------------------------------------------------------------------------------
_INPUT_COLUMNS = ("key", "source", "image", "image_ext", "caption", "meta")


def _rows_for_output(samples: pa.Table) -> dict:
    """Per kept row: the cleaned caption and the JSON metadata written next to the image."""
    # Vectors (embeddings) stay in samples.parquet; the per-sample JSON gets scalars only.
    derived = [
        c
        for c, t in zip(samples.column_names, samples.schema.types)
        if c not in _INPUT_COLUMNS
        and not pa.types.is_list(t)
        and not pa.types.is_fixed_size_list(t)
        and not pa.types.is_large_list(t)
    ]
    cols = {c: samples.column(c).to_pylist() for c in derived}
    captions = samples.column("caption").to_pylist() if "caption" in samples.column_names else [None] * samples.num_rows
    metas = samples.column("meta").to_pylist() if "meta" in samples.column_names else [None] * samples.num_rows
    out = {"caption": captions, "meta": []}
    for r in range(samples.num_rows):
        try:
            meta = json.loads(metas[r]) if metas[r] else {}
        except (TypeError, ValueError, RecursionError):  # readers cap depth; a custom reader may not
            meta = {"meta_raw": metas[r]}
        if not isinstance(meta, dict):
            meta = {"meta": meta}
        fields = {}
        for c in derived:
            v = cols[c][r]
            if c == "phash" and v is not None:
                v = f"{int(v):016x}"
            if isinstance(v, bytes):
                continue
            fields[c] = v
        meta["mmcurate"] = fields
        out["meta"].append(json.dumps(meta, ensure_ascii=False, sort_keys=True, default=_json_default))
    return out


def _output_table(batch: pa.Table, rows_meta: dict, rows: list[int]) -> pa.Table:
    return pa.table(
        {
            "key": batch.column("key"),
            "image": batch.column("image"),
            "image_ext": batch.column("image_ext"),
            "caption": pa.array([rows_meta["caption"][r] for r in rows], pa.string()),
            "meta": pa.array([rows_meta["meta"][r] for r in rows], pa.string()),
        }
    )


def _samples_schema(meta_schemas: list, extras: list) -> pa.Schema:
    """samples.parquet's schema, fixed before the first shard is written: every shard's metadata columns
    (unified), the global steps' columns, pHash as 16-hex text, and the output shard."""
    base = (
        pa.unify_schemas(meta_schemas, promote_options="permissive")
        if meta_schemas
        else pa.schema([("key", pa.string()), ("source", pa.string())])
    )
    fields = []
    for f in base:
        if f.name == "image":
            continue
        fields.append(pa.field(f.name, pa.string()) if f.name == "phash" else f.with_nullable(True))
    for extra in extras:
        names = {f.name for f in fields}
        fields += [f.with_nullable(True) for f in extra.schema if f.name != "key" and f.name not in names]
    return pa.schema(fields + [pa.field("shard", pa.string())])


def _samples_table(meta: pa.Table, shard_names: list[str], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        if f.name == "shard":
            cols["shard"] = pa.array(shard_names, pa.string())
        elif f.name not in meta.column_names:
            cols[f.name] = pa.nulls(meta.num_rows, f.type)
        elif f.name == "phash":
            cols["phash"] = pa.array(
                [None if v is None else f"{int(v):016x}" for v in meta.column("phash").to_pylist()], pa.string()
            )
        else:
            cols[f.name] = meta.column(f.name).cast(f.type)
    return pa.table(cols, schema=schema)


def _make_thumbnail_collector():
    try:
        from mmcurate.report.thumbnails import ThumbnailCollector
    except ImportError:
        return None
    return ThumbnailCollector()


def _peak_rss_mb() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"driver": round(self_kb / 1024, 1), "largest_worker": round(child_kb / 1024, 1)}
