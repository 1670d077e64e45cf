"""Phase 1, the map phase, as every executor runs it: which shards still need mapping, and what is done with
each shard's done record. Only the runner that maps the shards differs (a process pool locally, Ray Data on
Ray); whatever runs them, a shard leaves the same files in _work/ (``executor.write_map_shard``) and ends with
its done record, which --resume trusts once ``output_dir.check_done_record`` has checked its files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from mmcurate.pipeline.output_dir import check_done_record, forget_shard, log, read_done_record
from mmcurate.pipeline.read_step import READ_STEP, ReadRejects
from mmcurate.pipeline.recipe import Recipe
from mmcurate.pipeline.reuse import ReusePlan, plan_reuse, stored_fingerprints
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import AccountingError, GlobalStage, MapStage, StageError


@dataclasses.dataclass
class StagePlan:
    map_steps: list[tuple[str, MapStage]]  # (stats name, stage) in recipe order, global stages' map parts included
    global_steps: list[GlobalStage]  # in recipe order
    reuse: ReusePlan | None = None  # which map steps reuse an earlier run's stored columns (pipeline.reuse)

    @classmethod
    def for_recipe(cls, recipe: Recipe) -> StagePlan:
        """The recipe's plan, its map steps reusing what an input that is an earlier run stored."""
        plan = cls.from_stages(recipe.build_stages())
        plan.reuse = plan_reuse(plan.map_steps, stored_fingerprints(recipe.input_path, recipe.input_format))
        plan.map_steps = plan.reuse.steps
        return plan

    @classmethod
    def from_stages(cls, stages) -> StagePlan:
        # The reader's verdicts (unreadable samples, damaged shard tails) are rejected first, as stage "read".
        map_steps: list[tuple[str, MapStage]] = [(READ_STEP, ReadRejects())]
        global_steps = []
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


def setup_plan(recipe: Recipe) -> StagePlan:
    """The recipe's plan with every map step set up (models loaded), ready to process batches."""
    plan = StagePlan.for_recipe(recipe)
    for _, st in plan.map_steps:
        st.setup()
    return plan


def map_batch(plan: StagePlan, batch, stats: dict, where: str = "") -> tuple:
    """The map steps of ``plan`` over one batch in recipe order: (the kept rows, each rejecting step's rejects as
    REJECTS_SCHEMA tables), the per-step counters added to ``stats`` (global_phase.new_stat). Every executor's
    local loop and mmcurate.api run batches through it; `where` names the batch in an accounting error."""
    rejects = []
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
                f"stage {name}{where}: {batch.num_rows} in, {res.kept.num_rows} kept + {res.rejected.num_rows} rejected"
            )
        st["kept"] += res.kept.num_rows
        st["rejected"] += res.rejected.num_rows
        st["reused"] += batch.num_rows if res.reused else 0
        if res.rejected.num_rows:
            st["reasons"].update(res.rejected.column("reason").to_pylist())
            rejects.append(res.rejected.cast(REJECTS_SCHEMA))
        batch = res.kept
    return batch, rejects


class MapRunner(Protocol):
    def map_shards(self, todo: list[tuple[int, str]]) -> Iterable[dict]:
        """Maps each (index, shard) of `todo`, writing its work files, and yields each shard's done record
        as the shard completes, in any order."""
        ...


def run_map_phase(runner: MapRunner, reader, shards: list[str], work: Path, progress: bool | str) -> list[dict]:
    """Every shard's done record, in shard order: those an earlier run left (resume), the rest from `runner`."""
    records, todo = done_and_todo(work, shards)
    if todo:
        shown = map_progress(progress, lambda: sum((reader.count(s) or 0) for _, s in todo) or None, len(todo))
        for record in runner.map_shards(todo):
            records[record["index"]] = record
            if shown is not None:
                shown.update(record)
        if shown is not None:
            shown.close()
    missing = [i for i, _ in todo if i not in records]
    if missing:
        raise AccountingError(f"shard(s) {missing} were not mapped")
    return [records[i] for i in range(len(shards))]


def done_and_todo(work: Path, shards: list[str]) -> tuple[dict[int, dict], list[tuple[int, str]]]:
    """The done records of shards an earlier run finished (resume), and the (index, shard) still to map."""
    records: dict[int, dict] = {}
    todo = []
    for i, shard in enumerate(shards):
        f = work / "done" / f"{i:05d}.json"
        if f.exists():
            rec = read_done_record(f)
            why = check_done_record(work, rec, shard)
            if why is None:
                records[i] = rec
                continue
            log(f"resume: mapping shard {i} ({shard}) again: {why}")
        forget_shard(work, i)  # no stale files of an earlier try
        todo.append((i, shard))
    return records, todo


def check_shard_errors(records: list[dict], policy: str) -> None:
    """run.on_shard_error: fail stops a run whose input had a shard that could not be read to its end."""
    errors = [e for r in records for e in r.get("shard_errors", [])]
    if errors and policy == "fail":
        raise StageError(
            f"{len(errors)} input shard(s) could not be read to the end (run.on_shard_error: fail), "
            f"first: {errors[0]['detail']}; fix or remove the shard, or set run.on_shard_error: warn "
            f"to curate what can be read"
        )


# ---------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, one-line log records elsewhere (a batch job's log)
# ---------------------------------------------------------------------------------------------
#: Seconds between two progress lines when stderr is not a terminal (also a line at every 10% of the samples).
PROGRESS_INTERVAL_ENV = "MMCURATE_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 30.0


def progress_mode(progress: bool | str | None, stream=None) -> str | None:
    """How the map phase shows progress: "bar" (tqdm), "log" (periodic one-line records through
    output_dir.log) or None. ``progress``: False/None: none; "always": the bar wherever stderr goes; "log": the
    lines; True: the bar on a terminal, the lines elsewhere."""
    if not progress:
        return None
    if progress in ("always", "bar"):
        return "bar"
    if progress == "log":
        return "log"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "log"


def progress_interval() -> float:
    """MMCURATE_PROGRESS_INTERVAL (seconds, > 0), else 30; a bad value is an error that says what is valid."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise StageError(f"{PROGRESS_INTERVAL_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


def map_progress(progress: bool | str | None, total, n_shards: int):
    """The map phase's progress display (``update(done_record)``, ``close()``), or None. ``total``: the
    samples to map, or a callable giving them (counted only when something is shown), None when unknown."""
    mode = progress_mode(progress)
    if mode is None:
        return None
    n = total() if callable(total) else total
    if mode == "bar":
        return _BarProgress(_progress_bar(n))
    return LogProgress(n, n_shards, interval=progress_interval())


class _BarProgress:
    def __init__(self, bar):
        self.bar = bar

    def update(self, record: dict) -> None:
        _show_progress(self.bar, record)

    def close(self) -> None:
        self.bar.close()


class LogProgress:
    """The map phase's progress as one-line records, for a stderr that is not a terminal::

        mmcurate: map: 12,000/50,000 samples (24%), 5/20 shards, 410 samples/s, eta 1m33s

    A line when the phase starts, then when ``interval`` seconds have passed since the last one or the samples
    cross another 10% of ``total``, and one when it ends. Updates come per finished shard."""

    def __init__(
        self, total: int | None, n_shards: int, interval: float = DEFAULT_PROGRESS_INTERVAL, clock=None, emit=None
    ):
        self.total, self.n_shards, self.interval = total, n_shards, interval
        self.clock = clock or time.monotonic
        self.emit = emit or log
        self.done = self.shards_done = 0
        self.t0 = self.last = self.clock()
        self.last_tenth = 0
        of = f"{total:,} samples in " if total else ""
        self.emit(f"map: started, {of}{n_shards:,} shard(s)")

    def update(self, record: dict) -> None:
        self.done += int(record.get("read") or 0)
        self.shards_done += 1
        now = self.clock()
        tenth = int(10 * self.done / self.total) if self.total else 0
        if now - self.last >= self.interval or tenth > self.last_tenth:
            self.last, self.last_tenth = now, max(tenth, self.last_tenth)
            if self.shards_done < self.n_shards:
                self.emit(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            head = f"{self.done:,}/{self.total:,} samples ({min(100, 100 * self.done // self.total)}%)"
        else:
            head = f"{self.done:,} samples"
        text = f"map: {head}, {self.shards_done:,}/{self.n_shards:,} shards, {rate:,.0f} samples/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", eta {format_duration((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        now = self.clock()
        rate = self.done / max(now - self.t0, 1e-9)
        self.emit(
            f"map: done, {self.done:,} samples from {self.shards_done:,} shard(s) in "
            f"{format_duration(now - self.t0)}, {rate:,.0f} samples/s"
        )


def format_duration(seconds: float) -> str:
    """12s, 1m33s, 2h05m."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _progress_bar(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, desc="map", unit="sample", initial=0, dynamic_ncols=True, file=sys.stderr)


def _show_progress(bar, record: dict) -> None:
    bar.update(record["read"])
    rates = {k: (v["in"] / v["seconds"] if v["seconds"] else 0.0) for k, v in record["stages"].items()}
    bar.set_postfix_str(" ".join(f"{k}={r:,.0f}/s" for k, r in rates.items()), refresh=False)
