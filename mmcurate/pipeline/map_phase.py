"""Phase 1, the map phase, as every executor runs it: which shards still need mapping, and what is done with
each shard's done record. Only the runner that maps the shards differs (a process pool locally, Ray Data on
Ray); whatever runs them, a shard leaves the same files in _work/ (``executor.write_map_shard``) and ends with
its done record, which --resume trusts once ``output_dir.check_done_record`` has checked its files.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from mmcurate.pipeline.output_dir import check_done_record, forget_shard, log, read_done_record
from mmcurate.pipeline.read_step import READ_STEP, ReadRejects
from mmcurate.pipeline.recipe import Recipe
from mmcurate.pipeline.stage import AccountingError, GlobalStage, MapStage, StageError


@dataclasses.dataclass
class StagePlan:
    map_steps: list[tuple[str, MapStage]]  # (stats name, stage) in recipe order, global stages' map parts included
    global_steps: list[GlobalStage]  # in recipe order

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
    plan = StagePlan.from_stages(recipe.build_stages())
    for _, st in plan.map_steps:
        st.setup()
    return plan


class MapRunner(Protocol):
    def map_shards(self, todo: list[tuple[int, str]]) -> Iterable[dict]:
        """Maps each (index, shard) of `todo`, writing its work files, and yields each shard's done record
        as the shard completes, in any order."""
        ...


def run_map_phase(runner: MapRunner, reader, shards: list[str], work: Path, progress: bool) -> list[dict]:
    """Every shard's done record, in shard order: those an earlier run left (resume), the rest from `runner`."""
    records, todo = done_and_todo(work, shards)
    if todo:
        bar = _progress_bar(sum((reader.count(s) or 0) for _, s in todo) or None) if progress else None
        for record in runner.map_shards(todo):
            records[record["index"]] = record
            if bar is not None:
                _show_progress(bar, record)
        if bar is not None:
            bar.close()
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


def _progress_bar(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, desc="map", unit="sample", initial=0, dynamic_ncols=True, file=sys.stderr)


def _show_progress(bar, record: dict) -> None:
    bar.update(record["read"])
    rates = {k: (v["in"] / v["seconds"] if v["seconds"] else 0.0) for k, v in record["stages"].items()}
    bar.set_postfix_str(" ".join(f"{k}={r:,.0f}/s" for k, r in rates.items()), refresh=False)
