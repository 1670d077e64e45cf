"""The Ray strategy: the executor's phases and outputs (pipeline.executor), with the work on Ray.

    RayExecutor(recipe, address=None | "auto" | "ray://head:10001", resume=..., overwrite=...).run()

RayExecutor is pipeline.executor.Executor with a RayStrategy. Same recipe, same outputs: the shards,
samples/rejects/duplicates parquet and the manifest's counts are byte for byte those of :class:`LocalExecutor`
on the same input. The strategy supplies what differs:

  map     the map runner. The shards not done yet (the shared map phase skips those with a done record)
          become a Ray Data dataset. A read step streams each shard's batches (recipe.batch_size rows, the
          same reader), then each map step (recipe order; global stages contribute their map part) is one
          ``map_batches``: Ray tasks, or an actor pool when the stage loads something in ``setup()`` or needs
          a GPU, with num_cpus/num_gpus from ``stage.resources``. The driver consumes the dataset and, as each
          shard completes, writes exactly the files the local map runner writes (``write_map_shard``).
  global  memory mode: ``run_memory_global_phase`` inside one Ray task (resources from the global stages),
          reading _work/ from the shared filesystem; one task holds all survivors' metadata (a few dozen bytes
          per sample, as locally). Sharded mode (the default on Ray: ``auto_global_mode``): the driver runs
          the global steps (pipeline.global_sharded) and each step's per-shard and per-partition work runs as
          Ray tasks (one CPU each, no GPU), so no process holds the whole dataset; same outputs.
  session a local Ray instance started for the run (or a cluster joined), and the manifest's ``run.ray``.
The write phase runs on the driver, as locally (it re-reads the input for the original bytes).

How rows travel. Ray Data may merge small blocks (a task's outputs up to target_max_block_size) and split
large ones, so nothing relies on block boundaries: every row carries tag columns (``__mmc_*``: shard, input
batch, row within the batch, kind) and each step processes the runs of rows of one input batch it is
given. Rejects travel in band, as rows of kind "reject" (key, source, stage, reason, detail, step and
position), and each shard's read ends with an "end" row holding the number of samples read; a shard is
complete on the driver when it has seen that many kept + rejected rows. A retried task therefore leaves
no stray files behind, and the per-step counters (in/kept/rejected/reasons) follow from the rows; each
row also carries its share of every step's time, for the manifest's seconds. The last step stores the
kept rows' exact Arrow schema on the first row of each run, so the driver rebuilds each batch's kept table
as the stage returned it. Map stages must keep the columns they do not know (``__mmc_row`` among them)
and their rows' order, as every built-in stage does; one that drops the tag is an error naming the stage.
An input batch reaches a stage whole unless its block outgrows Ray's target_max_block_size (128 MiB by
default) and Ray splits it: per-row stages (every built-in CPU stage) give the same rows either way, a
batched model's outputs (CLIP embeddings) may then differ in the last bits from the local run's. Raise
``DataContext.target_max_block_size`` above the reader's batch byte cap (256 MiB) to rule that out.

Failures. A task whose worker dies is retried (``max_retries``), a dead actor is restarted and its call
retried (``max_restarts`` / ``max_task_retries``); an exception a stage raises fails the run. A driver
killed mid-run resumes with ``--resume`` at shard granularity, from the done records it wrote.

Requires ``pip install 'mmcurate[ray]'``. On a cluster, every node needs mmcurate installed (or a
runtime_env shipping it) and the input and output paths on a shared filesystem.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.executor import Executor, GlobalTasks, write_map_shard
from mmcurate.pipeline.global_phase import GlobalPhaseResult, run_memory_global_phase
from mmcurate.pipeline.map_phase import StagePlan, progress_mode
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import AccountingError, MapStage, Resources, StageError

RAY_INSTALL_HINT = "the Ray executor needs Ray Data: pip install 'mmcurate[ray]'"

# Tag columns. Data columns never start with the prefix (readers produce SAMPLE_SCHEMA plus what stages add).
TAG = "__mmc_"
SHARD, BATCH, ROW, KIND = TAG + "shard", TAG + "batch", TAG + "row", TAG + "kind"
STEP, PART, SEQ = TAG + "step", TAG + "part", TAG + "seq"  # a reject's step, run and position in the run
N_READ, T_READ = TAG + "n_read", TAG + "read_s"  # the end row of a shard
SCHEMA = TAG + "schema"  # kept rows' schema, on the first row of a run
REJ = TAG + "r_"  # REJECTS_SCHEMA columns of a reject row
LIVE, REJECT, END = 0, 1, 2  # KIND values
_LIVE_TAGS = (SHARD, BATCH, ROW, KIND)


def _t(k: int) -> str:
    """The column holding each row's share of map step k's seconds."""
    return f"{TAG}sec{k}"


def _u(k: int) -> str:
    """The column marking (1) the rows map step k decided on stored columns (StageResult.reused)."""
    return f"{TAG}reused{k}"


def _is_share(column: str) -> bool:
    """A per-row, per-step tag that travels with the row to the end (its time shares and reuse marks)."""
    return column.startswith((TAG + "sec", TAG + "reused"))


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise StageError(f"{RAY_INSTALL_HINT} ({exc})") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> bool:
    """Start a local Ray instance (address None) or connect to a cluster ("auto", "ray://host:port").
    Returns whether this call initialised Ray (False when it already was). A local instance gets
    mmcurate's directory on its workers' PYTHONPATH, so a source checkout works without installing."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None or address == "local":
        pkg_parent = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH")) if p)
        runtime_env = kwargs.pop("runtime_env", None) or {}
        runtime_env.setdefault("env_vars", {}).setdefault("PYTHONPATH", path)
        kwargs.setdefault("include_dashboard", False)
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


# ---------------------------------------------------------------------------------------------
# Worker side: the read step and the map steps (Ray Data UDFs over pyarrow tables)
# ---------------------------------------------------------------------------------------------
def _const(value, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array(np.full(n, value), type_) if n else pa.array([], type_)


class _ReadShards:
    """Rows {index, shard} -> each shard's batches with their tags, then the shard's end row."""

    def __init__(self, reader, batch_size: int):
        self.reader = reader
        self.batch_size = batch_size

    def __call__(self, shards: pa.Table):
        for index, shard in zip(shards.column("index").to_pylist(), shards.column("shard").to_pylist()):
            n_read, n_batches, t_read = 0, 0, 0.0
            t0 = time.perf_counter()
            for batch in self.reader.read(shard, batch_size=self.batch_size):
                t_read += time.perf_counter() - t0
                n = batch.num_rows
                if n:
                    yield (
                        batch.append_column(SHARD, _const(index, n, pa.int32()))
                        .append_column(BATCH, _const(n_batches, n, pa.int32()))
                        .append_column(ROW, pa.array(np.arange(n, dtype=np.int32)))
                        .append_column(KIND, _const(LIVE, n, pa.int8()))
                    )
                n_read += n
                n_batches += 1
                t0 = time.perf_counter()
            yield pa.table(
                {
                    SHARD: pa.array([index], pa.int32()),
                    BATCH: pa.array([n_batches], pa.int32()),
                    KIND: pa.array([END], pa.int8()),
                    N_READ: pa.array([n_read], pa.int64()),
                    T_READ: pa.array([t_read], pa.float64()),
                }
            )


class _MapStep:
    """Map step `position` of the plan (a stage, or None for a recipe without map steps) over a block.

    Live rows are processed per run of one input batch; reject and end rows pass through (tags only). The
    last step drops the image bytes and records the kept rows' schema, as the local map phase stores them.
    Used as a task's function (an instance) or as an actor pool's class (setup() once per actor)."""

    def __init__(
        self,
        name: str | None,
        stage: MapStage | None,
        position: int,
        last: bool,
        threads: int | None,
        eager_setup: bool = False,
    ):
        self.name, self.stage, self.position, self.last, self.threads = name, stage, position, last, threads
        self._ready = False
        if eager_setup:
            self._setup()

    def _setup(self):
        if not self._ready and self.stage is not None:
            self.stage.setup()
        self._ready = True

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return table
        if self.threads:
            # the native kernels' thread pool, sized to the CPUs Ray reserved for this step
            os.environ["MMCURATE_NUM_THREADS"] = str(self.threads)
        self._setup()
        is_live = pc.equal(table.column(KIND), LIVE)
        live = table.filter(is_live)
        others = table.filter(pc.invert(is_live))
        outs = []
        if live.num_rows:
            shard = live.column(SHARD).to_numpy()
            batch = live.column(BATCH).to_numpy()
            cuts = np.flatnonzero((shard[1:] != shard[:-1]) | (batch[1:] != batch[:-1])) + 1
            bounds = [0, *cuts.tolist(), live.num_rows]
            for a, b in zip(bounds[:-1], bounds[1:]):
                outs += self._run(live.slice(a, b - a))
        if others.num_rows:
            outs.append(others.select([c for c in others.column_names if c.startswith(TAG)]))
        return pa.concat_tables(outs, promote_options="permissive")

    def _run(self, run: pa.Table) -> list[pa.Table]:
        """One input batch's live rows (or a part of them) through the stage."""
        k = self.position
        data = run.select([c for c in run.column_names if not c.startswith(TAG)])
        tags = run.select([c for c in run.column_names if c in _LIVE_TAGS or _is_share(c)])
        shard, batch = run.column(SHARD)[0].as_py(), run.column(BATCH)[0].as_py()
        part = pc.min(run.column(ROW)).as_py()
        if self.stage is None:
            return [self._finish(data, tags, part)]

        n_in = run.num_rows
        t0 = time.perf_counter()
        res = self.stage.process(data.append_column(ROW, run.column(ROW)))
        seconds = time.perf_counter() - t0
        kept, rejected = res.kept, res.rejected
        if kept.num_rows + rejected.num_rows != n_in:
            raise AccountingError(
                f"stage {self.name} on shard index {shard}: {n_in} in, {kept.num_rows} kept + "
                f"{rejected.num_rows} rejected"
            )
        share = seconds / n_in
        if ROW not in kept.column_names:
            raise StageError(
                f"map stage {self.name!r} dropped the column {ROW!r}: map stages must keep the "
                f"columns they do not know (the Ray executor tags rows with them)"
            )
        at = pc.index_in(kept.column(ROW), value_set=run.column(ROW).combine_chunks())
        if at.null_count:
            raise StageError(f"map stage {self.name!r} returned rows it was not given")
        kept_tags = tags.take(at).append_column(_t(k), _const(share, kept.num_rows, pa.float64()))
        kept_tags = kept_tags.append_column(_u(k), _const(int(res.reused), kept.num_rows, pa.int8()))
        kept = kept.drop_columns([c for c in kept.column_names if c.startswith(TAG)])
        outs = [self._finish(kept, kept_tags, part) if self.last else _hstack(kept, kept_tags)]
        if rejected.num_rows:
            rejected = rejected.cast(REJECTS_SCHEMA)
            n = rejected.num_rows
            # the rejected rows' own tags (their time shares of earlier steps), found by key in this batch
            at = pc.index_in(rejected.column("key"), value_set=data.column("key").combine_chunks())
            cols = {
                SHARD: _const(shard, n, pa.int32()),
                BATCH: _const(batch, n, pa.int32()),
                ROW: run.column(ROW).take(at),
                KIND: _const(REJECT, n, pa.int8()),
                STEP: _const(k, n, pa.int16()),
                PART: _const(part, n, pa.int32()),
                SEQ: pa.array(np.arange(n, dtype=np.int32)),
            }
            for c in tags.column_names:
                if _is_share(c):
                    cols[c] = tags.column(c).take(at)
            cols[_t(k)] = _const(share, n, pa.float64())
            cols[_u(k)] = _const(int(res.reused), n, pa.int8())
            for f in REJECTS_SCHEMA:
                cols[REJ + f.name] = rejected.column(f.name)
            outs.append(pa.table(cols))
        return outs

    @staticmethod
    def _finish(kept: pa.Table, tags: pa.Table, part: int) -> pa.Table:
        """What the local map phase stores of kept rows: everything but the image bytes. Their schema rides
        on the run's first row, so the driver restores each batch's table exactly."""
        if "image" in kept.column_names:
            kept = kept.drop_columns(["image"])
        n = kept.num_rows
        schema = [kept.schema.serialize().to_pybytes()] + [None] * (n - 1) if n else []
        return (
            _hstack(kept, tags)
            .append_column(PART, _const(part, n, pa.int32()))
            .append_column(SCHEMA, pa.array(schema, pa.binary()))
        )


def _hstack(a: pa.Table, b: pa.Table) -> pa.Table:
    for name in b.column_names:
        a = a.append_column(name, b.column(name))
    return a


# ---------------------------------------------------------------------------------------------
# Driver side: collect rows by shard, write a shard's work files when it is complete
# ---------------------------------------------------------------------------------------------
class _ShardAssembler:
    def __init__(self, step_names: list[str]):
        self.step_names = step_names
        self.parts: dict[int, list] = defaultdict(list)
        self.seen: Counter = Counter()  # kept + rejected rows so far, per shard
        self.expected: dict[int, int] = {}  # samples read, from the shard's end row

    def add(self, block: pa.Table) -> list[int]:
        """Takes a block of the map phase's output; returns the shards it completed."""
        if block.num_rows == 0:
            return []
        shard = block.column(SHARD).to_numpy()
        kind = block.column(KIND).to_numpy()
        complete = []
        for s in np.unique(shard).tolist():
            mask = shard == s
            sub = block if mask.all() else block.filter(pa.array(mask))
            self.parts[s].append(sub)
            k = kind[mask]
            self.seen[s] += int(np.count_nonzero(k != END))
            ends = np.flatnonzero(k == END)
            if len(ends):
                self.expected[s] = sub.column(N_READ)[int(ends[0])].as_py()
            if s in self.expected:
                if self.seen[s] > self.expected[s]:
                    raise AccountingError(
                        f"shard index {s}: read {self.expected[s]} samples but {self.seen[s]} "
                        f"came back from the map steps"
                    )
                if self.seen[s] == self.expected[s]:
                    complete.append(s)
        return complete

    def pending(self) -> list[int]:
        return sorted(self.parts)

    def write(self, s: int, shard: str, work: Path) -> dict:
        """The shard's meta/rejects/done files, as the local map phase writes them."""
        t = pa.concat_tables(self.parts.pop(s), promote_options="permissive")
        self.seen.pop(s, None)
        n_read = self.expected.pop(s)
        kind = t.column(KIND)
        end = t.filter(pc.equal(kind, END))
        t_read = end.column(T_READ)[0].as_py()
        rejected = t.filter(pc.equal(kind, REJECT))
        live = t.filter(pc.equal(kind, LIVE))

        reject_parts = []
        if rejected.num_rows:
            # per batch, per step, per run, in the order the stage returned them: the local order
            rejected = rejected.sort_by(
                [(BATCH, "ascending"), (STEP, "ascending"), (PART, "ascending"), (SEQ, "ascending")]
            )
            reject_parts.append(
                pa.table({f.name: rejected.column(REJ + f.name) for f in REJECTS_SCHEMA}).cast(REJECTS_SCHEMA)
            )
        kept_parts = []
        if live.num_rows:
            live = live.sort_by([(BATCH, "ascending"), (ROW, "ascending")])
            batch = live.column(BATCH).to_numpy()
            bounds = [0, *(np.flatnonzero(batch[1:] != batch[:-1]) + 1).tolist(), live.num_rows]
            kept_parts = [_restore_batch(live.slice(a, b - a)) for a, b in zip(bounds[:-1], bounds[1:])]

        steps = rejected.column(STEP).to_numpy() if rejected.num_rows else np.zeros(0, np.int16)
        reasons = rejected.column(REJ + "reason").to_pylist() if rejected.num_rows else []
        n_rejected = [int(np.count_nonzero(steps == k)) for k in range(len(self.step_names))]
        stats = {}
        for k, name in enumerate(self.step_names):
            n_in = live.num_rows + sum(n_rejected[k:])  # rows that reached step k
            seconds = pc.sum(t.column(_t(k))).as_py() if _t(k) in t.column_names else None
            reused = pc.sum(t.column(_u(k))).as_py() if _u(k) in t.column_names else None
            stats[name] = {
                "in": n_in,
                "kept": n_in - n_rejected[k],
                "rejected": n_rejected[k],
                "seconds": seconds or 0.0,
                "reasons": Counter(r for r, st in zip(reasons, steps.tolist()) if st == k),
                "reused": reused or 0,
            }
        return write_map_shard(work, s, shard, kept_parts, reject_parts, n_read, t_read, stats)


def _restore_batch(rows: pa.Table) -> pa.Table:
    """One input batch's kept rows, sorted, with the columns and types the last stage returned."""
    heads = pc.unique(rows.column(SCHEMA).drop_null()).to_pylist()
    if len(heads) == 1:
        return _as_schema(rows, heads[0])
    # The batch reached the last step in several runs whose schemas differ: each run as it was returned.
    parts = []
    for part in pc.unique(rows.column(PART)).to_pylist():
        sub = rows.filter(pc.equal(rows.column(PART), part))
        parts.append(_as_schema(sub, pc.unique(sub.column(SCHEMA).drop_null())[0].as_py()))
    return pa.concat_tables(parts, promote_options="permissive")


def _as_schema(rows: pa.Table, serialized: bytes) -> pa.Table:
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    return rows.select(schema.names).cast(schema)


# ---------------------------------------------------------------------------------------------
# The Ray strategy
# ---------------------------------------------------------------------------------------------
class RayStrategy:
    """The map phase on Ray Data, the sharded global phase's tasks as Ray tasks, the memory global phase in one
    Ray task (see the module docstring). address: None starts a local Ray instance (num_cpus: its size, default
    all cores); "auto" or "ray://host:port" connects to a cluster. An already initialised Ray is used as it is.
    max_retries: how often a map task whose worker died is retried and a dead actor restarted (with its call
    retried); None keeps Ray Data's defaults, which retry such system failures without limit. Errors a stage
    raises are never retried: they fail the run (resume it after fixing the cause)."""

    auto_global_mode = "sharded"  # on a cluster, "auto" partitions the global steps over Ray tasks

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int | None = None):
        import_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.dataset = None  # the last map phase's Ray Dataset, for ds.stats() after a run
        self._ray_info: dict = {}

    @contextmanager
    def session(self) -> Iterator[None]:
        """Ray for the whole run: started here (and shut down after) unless it already runs."""
        ray = import_ray()
        started = init_ray(self.address, num_cpus=self.num_cpus)
        try:
            self._ray_info = {
                "ray_version": ray.__version__,
                "address": self.address or "local",
                "cluster_resources": {
                    k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")
                },
            }
            yield
        finally:
            if started:
                ray.shutdown()

    def run_info(self) -> dict:
        return {"executor": "ray", "ray": self._ray_info}

    def map_runner(self, recipe, reader, work: Path, progress: bool) -> RayMapRunner:
        return RayMapRunner(self, recipe, reader, work, progress)

    @contextmanager
    def global_tasks(self, recipe) -> Iterator[GlobalTasks]:
        """One CPU per task; the tasks do not use a GPU."""
        cpus, _, _ = cluster_resources()
        yield GlobalTasks(self._task_map, parallelism=max(1, int(cpus)), tasks_see_gpu=False)

    def _task_map(self, fn, tasks):
        return ray_task_map(fn, tasks, max_retries=self._retries())

    def run_memory_global_phase(
        self, work: Path, plan: StagePlan, n_shards: int, progress: bool = False
    ) -> GlobalPhaseResult:
        """In one Ray task with the largest resources a global stage asks for, reading _work/ from the shared
        filesystem; the task holds all survivors' metadata (a few dozen bytes per sample, as locally)."""
        import ray

        _, gpus_total, node_cpus = cluster_resources()
        cpus = min(max([float(st.resources.cpus) for st in plan.global_steps] + [1.0]), node_cpus)
        gpus = max([float(st.resources.gpus) for st in plan.global_steps] + [0.0])
        if gpus > gpus_total:
            raise StageError(f"a global stage needs {gpus:g} GPU(s); the Ray cluster has {gpus_total:g}")
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=self._retries())(run_memory_global_phase)
        return ray.get(task.remote(work, plan, n_shards, progress))

    def _retries(self) -> int:
        return 3 if self.max_retries is None else self.max_retries


class RayExecutor(Executor):
    """The executor with RayStrategy (address, num_cpus, max_retries: its arguments). options: Executor's."""

    AUTO_GLOBAL_MODE = RayStrategy.auto_global_mode

    def __init__(
        self,
        recipe,
        address: str | None = None,
        num_cpus: int | None = None,
        max_retries: int | None = None,
        **options,
    ):
        ray_strategy = RayStrategy(address, num_cpus, max_retries)
        super().__init__(recipe, ray_strategy, **options)
        self.ray_strategy = ray_strategy

    @property
    def dataset(self):
        """The map phase's Ray Dataset, for ds.stats() after a run (None when every shard was done already)."""
        return self.ray_strategy.dataset


def cluster_resources() -> tuple[float, float, float]:
    """(CPUs, GPUs, CPUs of the largest node) of the Ray cluster."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
    node = max((n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=cpus)
    return cpus, gpus, float(node or cpus)


class RayMapRunner:
    """The shards to map as a Ray Data dataset: shards -> read -> one map_batches per map step. The driver
    consumes it and writes each shard's work files as the shard completes."""

    def __init__(self, strategy: RayStrategy, recipe, reader, work: Path, progress: bool):
        self.strategy, self.recipe, self.reader, self.work, self.progress = strategy, recipe, reader, work, progress

    def map_shards(self, todo: list[tuple[int, str]]) -> Iterator[dict]:
        # An earlier failed run in this process can leave its actor pools alive (and holding CPUs)
        # through reference cycles inside Ray Data until the garbage collector runs.
        gc.collect()
        plan = StagePlan.for_recipe(self.recipe)
        shards = dict(todo)
        assembler = _ShardAssembler([name for name, _ in plan.map_steps])
        ds = self._dataset(todo, plan)
        self.strategy.dataset = ds
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for s in assembler.add(block):
                yield assembler.write(s, shards[s], self.work)
        if assembler.pending():
            raise AccountingError(f"shard(s) {assembler.pending()} did not come back complete from the map steps")

    def _step_specs(self, plan: StagePlan) -> list[dict]:
        """Per map step: actor pool or tasks, num_cpus, num_gpus, pool size, native threads.

        A stage's `cpus` is the number of threads it uses (the decode stages ask for all cores), capped at
        the largest node. Every actor pool holds at least one actor, and its CPUs, for the whole map phase,
        so requests are scaled down together until one actor of each pool plus the largest task fit in the
        cluster; otherwise a small machine would wait forever for a task's CPUs."""
        cpus_total, gpus_total, node_cpus = cluster_resources()
        specs = []
        for name, stage in plan.map_steps:
            r = getattr(stage, "resources", None) or Resources()
            if r.gpus > gpus_total:
                raise StageError(
                    f"stage {name!r} needs {r.gpus:g} GPU(s) per worker; the Ray cluster has {gpus_total:g}"
                )
            specs.append(
                {
                    "name": name,
                    "stage": stage,
                    "actor": bool(stage.loads_state) or r.gpus > 0,
                    "cpus": min(max(float(r.cpus), 0.01), node_cpus),
                    "gpus": float(r.gpus),
                }
            )
        need = sum(s["cpus"] for s in specs if s["actor"]) + max(
            [s["cpus"] for s in specs if not s["actor"]], default=0.0
        )
        scale = min(1.0, cpus_total / need) if need else 1.0
        for s in specs:
            s["cpus"] = round(s["cpus"] * scale, 4)
            s["threads"] = max(1, math.ceil(s["cpus"] - 1e-9))
            if s["actor"]:
                by_cpu = int(cpus_total // s["cpus"]) if s["cpus"] else 1
                by_gpu = int(gpus_total // s["gpus"]) if s["gpus"] else by_cpu
                s["pool"] = max(1, min(by_cpu, by_gpu))
        return specs

    def _dataset(self, todo: list, plan: StagePlan):
        """The map phase as a Ray Data dataset: shards -> read -> one map_batches per map step."""
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = progress_mode(self.progress) == "bar"
        specs = self._step_specs(plan)
        common = {"batch_size": None, "batch_format": "pyarrow", "zero_copy_batch": True}
        task_args, actor_args = {}, {}
        retries = self.strategy.max_retries
        if retries is not None:
            task_args = {"max_retries": retries}
            actor_args = {"max_restarts": retries, "max_task_retries": retries}

        items = [{"index": i, "shard": s} for i, s in todo]
        try:  # one block per shard
            ds = ray.data.from_items(items, override_num_blocks=len(items))
        except TypeError:  # Ray < 2.20
            ds = ray.data.from_items(items, parallelism=len(items))
        # The read shares the first step's resources when that runs as tasks, so that Ray fuses the two.
        first = specs[0] if specs and not specs[0]["actor"] else {"cpus": 1.0}
        with warnings.catch_warnings():
            # Ray 2.60 deprecates retry limits given as ray_remote_args but has no named parameter yet.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                _ReadShards(self.reader, self.recipe.batch_size), num_cpus=first["cpus"], **task_args, **common
            )
            if not specs:  # no map steps: store what the local map phase stores
                return ds.map_batches(_named("store")(None, None, -1, True, None), num_cpus=1.0, **task_args, **common)
            for k, s in enumerate(specs):
                step = _named(s["name"])
                args = {
                    "name": s["name"],
                    "stage": s["stage"],
                    "position": k,
                    "last": k == len(specs) - 1,
                    "threads": s["threads"],
                }
                if not s["actor"]:
                    ds = ds.map_batches(step(**args), num_cpus=s["cpus"], **task_args, **common)
                    continue
                map_batches, kw = ds.map_batches, dict(common)
                if s["gpus"]:
                    # Ray's public map_batches wants a batch_size with GPUs; its internal twin (the same
                    # execution) keeps one block per call, so that the stage sees whole input batches.
                    if hasattr(ds, "map_batches_internal"):
                        map_batches = ds.map_batches_internal
                    else:
                        kw["batch_size"] = self.recipe.batch_size
                    kw["num_gpus"] = s["gpus"]
                ds = map_batches(
                    step,
                    fn_constructor_kwargs={**args, "eager_setup": True},
                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=s["pool"]),
                    num_cpus=s["cpus"],
                    **actor_args,
                    **kw,
                )
        return ds


def ray_task_map(fn, tasks, num_cpus: float = 1.0, max_retries: int = 3):
    """The builtin map's contract over Ray tasks: every task submitted at once, results yielded in task order
    (each fetched when the caller gets to it). fn is a module-level function (workers import it)."""
    import ray

    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(fn)
    refs = [remote.remote(t) for t in tasks]
    for ref in refs:
        yield ray.get(ref)


def _named(name: str) -> type:
    """A _MapStep subclass named after the step, so that Ray's progress shows MapBatches(integrity)."""
    return type(name, (_MapStep,), {"__module__": __name__})
