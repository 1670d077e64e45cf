"""The executor: a recipe's run in four phases, the same whatever executes the work.

  prepare  check the input, the reader options and the stages, then lock and ready the output directory
           (pipeline.output_dir); --resume of a finished run ends here.
  map      per input shard: read batches, run the map stages (and the map parts of global stages) in recipe
           order, write the survivors' metadata (no image bytes) and the rejects to _work/, atomically, then a
           per-shard done record (pipeline.map_phase: which shards are left, their records).
  global   the global stages, in recipe order, over the survivors of all shards (pipeline.global_phase): in
           memory (the columns they need for all survivors in one table) or, with run: {global_mode:
           sharded}, through per-shard and per-partition tasks that never hold it (pipeline.global_sharded);
           same outputs.
  write    re-read the input shards and copy the kept samples' original bytes into output shards
           (pipeline.write_phase), then duplicates.parquet, the observers' files, the manifest
           (pipeline.manifest), and the observers' last word (the report).

What differs between executors is an ExecutionStrategy: how the map phase's shards are run (LocalStrategy: in
process or in a pool of worker processes; ray_executor.RayStrategy: Ray Data), how the sharded global phase runs
its tasks (builtin map or the pool; Ray tasks), and where the memory global phase runs (here; one Ray task).
LocalExecutor and RayExecutor are this executor with either strategy. Observers (pipeline.observers) add
outputs of their own: the CLI attaches mmcurate.report's, for thumbs.parquet and report.html.

Memory is bounded by one batch per worker plus the metadata of the survivors (never the images). A run killed
at any point and re-run with resume=True skips finished shards and ends with the same outputs as an
uninterrupted run. Accounting (kept + rejected == read) is checked per shard and per run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Protocol

import pyarrow as pa

from mmcurate.pipeline.global_phase import (
    GlobalPhaseResult,
    new_stat,
    run_memory_global_phase,
    run_sharded_global_phase,
)
from mmcurate.pipeline.global_sharded import local_map
from mmcurate.pipeline.input import open_input
from mmcurate.pipeline.manifest import MANIFEST, build_manifest, peak_rss_mb, rounded, write_json
from mmcurate.pipeline.map_phase import (
    MapRunner,
    StagePlan,
    check_shard_errors,
    map_batch,
    run_map_phase,
    setup_plan,
)
from mmcurate.pipeline.observers import RunObserver
from mmcurate.pipeline.output_dir import (
    check_apart_from_input,
    file_record,
    input_paths,
    log,
    preflight_stages,
    recipe_identity,
)
from mmcurate.pipeline.output_dir import prepare as prepare_output
from mmcurate.pipeline.read_step import shard_errors
from mmcurate.pipeline.recipe import Recipe, parse_recipe
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import AccountingError, StageError
from mmcurate.pipeline.write_phase import write_shards

__all__ = ["Executor", "ExecutionStrategy", "GlobalTasks", "LocalExecutor", "LocalStrategy", "StagePlan"]

WORK = "_work"

# Done records go through this module-level name, which the fault-injection tests (tests/hostile) wrap to
# kill a run just before a shard's record is written.
_atomic_json = write_json


# ---------------------------------------------------------------------------------------------
# One shard's map: the steps over its batches, and the files it leaves in _work/
# ---------------------------------------------------------------------------------------------
def run_map_shard(recipe: Recipe, plan: StagePlan, shard_index: int, shard: str, work: Path) -> dict:
    """Runs the map steps over one input shard and writes its survivors and rejects to work/."""
    reader = open_input(recipe)
    stats = {name: new_stat() for name, _ in plan.map_steps}
    kept_parts, reject_parts = [], []
    n_read = 0
    t_read = 0.0
    t0 = time.perf_counter()
    for batch in reader.read(shard, batch_size=recipe.batch_size):
        t_read += time.perf_counter() - t0
        n_read += batch.num_rows
        batch, rejects = map_batch(plan, batch, stats, where=f" on shard {shard}")
        reject_parts += rejects
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
    per step, in that order) and, last, the done record with the per-step counters. Shared by the map runners,
    so what they leave in work/ is the same."""
    from mmcurate.io import write_parquet_atomic

    survivors = pa.concat_tables(kept_parts, promote_options="permissive") if kept_parts else None
    rejects = pa.concat_tables(reject_parts) if reject_parts else REJECTS_SCHEMA.empty_table()
    if (survivors.num_rows if survivors is not None else 0) + rejects.num_rows != n_read:
        raise AccountingError(
            f"shard {shard}: read {n_read}, survivors {survivors.num_rows if survivors else 0}, "
            f"rejected {rejects.num_rows}"
        )
    name = f"{shard_index:05d}"
    files: dict = {"meta": None}  # each file's size and rows, for resume to check (output_dir.check_done_record)
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


# ---------------------------------------------------------------------------------------------
# What an executor is given: the strategy
# ---------------------------------------------------------------------------------------------
@dataclass
class GlobalTasks:
    """How the sharded global phase runs its per-shard and per-partition tasks."""

    map_fn: Callable  # builtin map's contract: (fn, tasks) -> results in task order
    parallelism: int  # tasks that run at once
    tasks_see_gpu: bool = True  # whether a task may use a GPU (each step then decides)


class ExecutionStrategy(Protocol):
    """How an executor's work runs (LocalStrategy below, ray_executor.RayStrategy). The phases, resume,
    accounting, outputs and manifest are the executor's and the same for every strategy."""

    auto_global_mode: str  # what run.global_mode "auto" means with this strategy

    def session(self) -> AbstractContextManager:
        """Held for the whole run (e.g. a Ray instance)."""
        ...

    def run_info(self) -> dict:
        """What the manifest's `run` records about the executor (executor: its name, and its own fields)."""
        ...

    def map_runner(self, recipe: Recipe, reader, work: Path, progress: bool) -> MapRunner: ...

    def global_tasks(self, recipe: Recipe) -> AbstractContextManager[GlobalTasks]: ...

    def run_memory_global_phase(
        self, work: Path, plan: StagePlan, n_shards: int, progress: bool = False
    ) -> GlobalPhaseResult:
        """global_phase.run_memory_global_phase, wherever the strategy runs one process that holds the
        survivors' columns (progress: a log line as each step starts and ends)."""
        ...


# ---------------------------------------------------------------------------------------------
# The local strategy: this process, or a pool of worker processes
# ---------------------------------------------------------------------------------------------
class LocalStrategy:
    auto_global_mode = "memory"  # one process holds the survivors' columns

    def session(self) -> AbstractContextManager:
        return nullcontext()

    def run_info(self) -> dict:
        return {"executor": "local"}

    def map_runner(self, recipe: Recipe, reader, work: Path, progress: bool) -> MapRunner:
        return LocalMapRunner(recipe, work)

    @contextmanager
    def global_tasks(self, recipe: Recipe) -> Iterator[GlobalTasks]:
        with local_map(recipe.workers, threads_per_worker(recipe, recipe.workers)) as map_fn:
            yield GlobalTasks(map_fn, parallelism=recipe.workers)

    def run_memory_global_phase(
        self, work: Path, plan: StagePlan, n_shards: int, progress: bool = False
    ) -> GlobalPhaseResult:
        return run_memory_global_phase(work, plan, n_shards, progress=progress)


def threads_per_worker(recipe: Recipe, workers: int) -> int:
    """The native kernels' threads in each of `workers` processes: the recipe's, else the cores shared out."""
    return recipe.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)


class LocalMapRunner:
    """Maps shards in this process (run.workers 1) or in a pool of spawned worker processes, each of which
    sets the stages up once."""

    def __init__(self, recipe: Recipe, work: Path):
        self.recipe, self.work = recipe, work

    def map_shards(self, todo: list[tuple[int, str]]) -> Iterator[dict]:
        workers = min(self.recipe.workers, len(todo))
        if workers <= 1:
            plan = setup_plan(self.recipe)
            for i, shard in todo:
                yield run_map_shard(self.recipe, plan, i, shard, self.work)
            return
        initargs = (self.recipe.to_dict(), threads_per_worker(self.recipe, workers))
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=initargs
        ) as pool:
            pending = {pool.submit(_worker_run_shard, i, shard, str(self.work)) for i, shard in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()


_WORKER: dict = {}  # a worker process's recipe and set-up plan


def _worker_init(recipe_dict: dict, threads: int | None):
    if threads:
        os.environ["MMCURATE_NUM_THREADS"] = str(threads)
    recipe = parse_recipe(recipe_dict)
    _WORKER["recipe"] = recipe
    _WORKER["plan"] = setup_plan(recipe)


def _worker_run_shard(shard_index: int, shard: str, work_dir: str) -> dict:
    return run_map_shard(_WORKER["recipe"], _WORKER["plan"], shard_index, shard, Path(work_dir))


# ---------------------------------------------------------------------------------------------
# The executor
# ---------------------------------------------------------------------------------------------
class Executor:
    """Runs `recipe` with `strategy` (see the module docstring). resume: finish an interrupted run of the same
    recipe; overwrite: start again in an output that holds a run; progress: True shows a bar on a terminal and log
    lines elsewhere, "always" the bar everywhere, "log" the lines, False nothing; keep_work: keep _work/;
    observers: RunObservers told of the run's progress."""

    def __init__(
        self,
        recipe: Recipe,
        strategy: ExecutionStrategy,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool | str = True,
        keep_work: bool = False,
        observers: list[RunObserver] | tuple = (),
    ):
        self.recipe = recipe
        self.strategy = strategy
        self.out = Path(recipe.output_path)
        self.work = self.out / WORK
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress  # map_phase.progress_mode: a bar on a terminal, log lines elsewhere
        self.keep_work = keep_work
        self.observers = list(observers)

    @property
    def global_mode(self) -> str:
        mode = self.recipe.global_mode
        return self.strategy.auto_global_mode if mode == "auto" else mode

    def run(self) -> dict:
        """The run's manifest (also in output_path/manifest.json)."""
        with self.strategy.session():
            started = time.time()
            t_start = time.perf_counter()
            # A bad input, reader option or stage set-up fails here, before the output is touched.
            reader = open_input(self.recipe)
            for note in reader.start_notes():  # e.g. images found but no captions, and the option that fixes it
                log(f"input: {note}")
            shards = reader.shards()
            if not shards:
                raise StageError(f"no input shards found at {self.recipe.input_path!r}")
            preflight_stages(self.recipe.build_stages())
            check_apart_from_input(self.out, input_paths(self.recipe.input_path, reader, shards))
            # The run lock (output_dir.RunLock) is held from before the first write to the end of the run.
            lock, finished = prepare_output(
                self.out, resume=self.resume, overwrite=self.overwrite, identity=self._recipe_identity(), shards=shards
            )
            if finished is not None:  # --resume of this run, finished already
                return finished
            try:
                return self._run_locked(reader, shards, started, t_start)
            finally:
                lock.release(cleanup=True)  # the lock file goes too (it stays only after a kill)

    def _run_locked(self, reader, shards: list[str], started: float, t_start: float) -> dict:
        self._check_or_write_run_record(shards)
        timings = {}

        t = time.perf_counter()
        records = self._map_phase(reader, shards)
        timings["map"] = time.perf_counter() - t
        check_shard_errors(records, self.recipe.on_shard_error)

        t = time.perf_counter()
        plan = StagePlan.for_recipe(self.recipe)
        phase = self._global_phase(plan, len(shards))
        timings["global"] = time.perf_counter() - t
        for observer in self.observers:
            observer.on_global_phase(phase)

        return self._write_phase(reader, shards, records, plan, phase, timings, started, t_start)

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

    def _map_phase(self, reader, shards: list[str]) -> list[dict]:
        runner = self.strategy.map_runner(self.recipe, reader, self.work, self.progress)
        return run_map_phase(runner, reader, shards, self.work, self.progress)

    def _global_phase(self, plan: StagePlan, n_shards: int) -> GlobalPhaseResult:
        if self.global_mode == "sharded":
            with self.strategy.global_tasks(self.recipe) as tasks:
                return run_sharded_global_phase(
                    self.work,
                    plan,
                    n_shards,
                    map_fn=tasks.map_fn,
                    parallelism=tasks.parallelism,
                    tasks_see_gpu=tasks.tasks_see_gpu,
                    progress=bool(self.progress),
                )
        return self.strategy.run_memory_global_phase(self.work, plan, n_shards, progress=bool(self.progress))

    def _write_phase(self, reader, shards, records, plan, phase: GlobalPhaseResult, timings, started, t_start) -> dict:
        """The outputs, the manifest (kept + rejected == read, or the run fails), then the observers' last word."""
        from mmcurate.io import write_parquet_atomic

        t = time.perf_counter()
        written = write_shards(self.recipe, self.out, self.work, reader, shards, phase, self.observers)
        timings["write_shards"] = time.perf_counter() - t

        t = time.perf_counter()
        write_parquet_atomic(phase.duplicates, self.out / "duplicates.parquet")
        for observer in self.observers:
            observer.on_outputs_written(self.out)
        manifest = build_manifest(
            self.recipe,
            self.out,
            run_info=self.strategy.run_info(),
            started=started,
            t_start=t_start,
            shards=shards,
            records=records,
            map_step_names=[name for name, _ in plan.map_steps],
            phase=phase,
            kept=written.kept,
            rejected=written.rejected,
            shard_files=written.shard_files,
            timings=timings,
            reuse=plan.reuse,
        )
        counts = manifest["counts"]
        if not counts["accounting_ok"]:
            write_json(self.out / MANIFEST, manifest)
            raise AccountingError(f"read {counts['read']} != kept {counts['kept']} + rejected {counts['rejected']}")
        timings["write_tables"] = time.perf_counter() - t
        manifest["timings_s"] = rounded(timings)
        write_json(self.out / MANIFEST, manifest)

        observer_timings = {}
        for observer in self.observers:
            observer_timings.update(observer.on_run_finished(manifest, self.out))
        if observer_timings:
            manifest["timings_s"].update(rounded(observer_timings))
            manifest["run"]["peak_rss_mb"] = peak_rss_mb()
            write_json(self.out / MANIFEST, manifest)
        if not self.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return manifest


class LocalExecutor(Executor):
    """The executor with LocalStrategy: the map phase in run.workers processes on this machine, the global phase
    in this process (or, sharded, in a pool of run.workers processes). options: Executor's."""

    AUTO_GLOBAL_MODE = LocalStrategy.auto_global_mode

    def __init__(self, recipe: Recipe, **options):
        super().__init__(recipe, LocalStrategy(), **options)
