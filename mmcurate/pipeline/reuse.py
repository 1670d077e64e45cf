"""Reuse of stored columns: a run whose input is an earlier run's output (`input.format: mmcurate`, `--from RUN`)
skips the work whose results that run stored, when they were computed the same way.

A map stage names the columns it adds that may be reused, each with a fingerprint: the function and what its
values depend on (parameters, model and weights; never a device, batch size or thread count). A run records the
fingerprint of every such column of its samples.parquet in manifest.json (`columns`). The next run walks its map
steps in recipe order with what is known of each column, starting from the stored fingerprints:

- a step whose columns all hold equal fingerprints is *reused*: its ``reuse(batch)`` gives the verdict (every row
  kept by default; integrity re-applies its pixel limit) and nothing is recomputed;
- any other step computes, after dropping the stored columns it is about to replace (so a stale value is never
  taken for its own, e.g. by phash_dedup, which skips its decode when a pHash column is there).

Either way the step's fingerprints hold from then on, so a column recomputed with other parameters is not
mistaken downstream for the stored one. Stored columns that no step of the new recipe computes flow on with their
fingerprints (image embeddings feed semantic_dedup without clip_embed in the recipe).

Only the samples an earlier run kept are in its output: a threshold can be made stricter from a stored run, not
looser (that needs the earlier run's input).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import pyarrow as pa

from mmcurate.pipeline.stage import MapStage, StageResult

#: manifest.json's key for the fingerprints of samples.parquet's reusable columns.
MANIFEST_COLUMNS = "columns"
#: input.format of an earlier run's output directory.
RUN_FORMAT = "mmcurate"


def is_run_dir(path) -> bool:
    """Whether `path` is a finished mmcurate run: a directory with manifest.json and samples.parquet."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = os.fspath(path)
    return os.path.isfile(os.path.join(p, "manifest.json")) and os.path.isfile(os.path.join(p, "samples.parquet"))


def stored_fingerprints(input_path, input_format: str) -> dict[str, dict]:
    """The fingerprints of the columns an earlier run stored, when the input is one; else {}."""
    if input_format not in (RUN_FORMAT, "auto") or not is_run_dir(input_path):
        return {}
    with open(os.path.join(os.fspath(input_path), "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    columns = manifest.get(MANIFEST_COLUMNS) or {}
    return {c: v["fingerprint"] for c, v in columns.items() if isinstance(v, dict) and "fingerprint" in v}


@dataclass
class ReusePlan:
    """What the walk over the map steps decided: the steps (reusing ones wrapped), and every reusable column's
    fingerprint and origin ("input": stored by the earlier run and reused or passed on; else the step that
    computed it in this run)."""

    steps: list[tuple[str, MapStage]]
    reused: list[str]  # names of the steps offered stored columns (each batch's reuse() has the last word)
    columns: dict[str, dict]  # column -> {"fingerprint", "from"}


def plan_reuse(map_steps: list[tuple[str, MapStage]], stored: dict[str, dict]) -> ReusePlan:
    known = {c: {"fingerprint": fp, "from": "input"} for c, fp in stored.items()}
    steps, reused = [], []
    for name, stage in map_steps:
        fps = stage.column_fingerprints()
        same = fps and all(known.get(c, {}).get("fingerprint") == fp for c, fp in fps.items())
        if same and all(known[c]["from"] == "input" for c in fps):
            steps.append((name, ReusingStage(stage, stale=())))
            reused.append(name)
            continue
        if same:  # made by an earlier step of this run: the stage's own business (phash_dedup takes integrity's)
            steps.append((name, stage))
            continue
        stale = tuple(c for c in fps if c in known)
        steps.append((name, ReusingStage(stage, stale=stale, reuse=False) if stale else stage))
        for c, fp in fps.items():
            known[c] = {"fingerprint": fp, "from": name}
    return ReusePlan(steps, reused, known)


def _json_roundtrip(value):
    """Fingerprints as manifest.json holds them (tuples become lists), so a stored one compares equal."""
    return json.loads(json.dumps(value, sort_keys=True))


class ReusingStage(MapStage):
    """A map step of a run over stored columns: reuse=True gives the stage's reuse() verdict on batches that hold
    its columns (computing those that do not); reuse=False computes after dropping the `stale` stored columns."""

    def __init__(self, stage: MapStage, stale: tuple[str, ...], reuse: bool = True):
        # No MapStage.__init__: the wrapped stage's parameters and resources are its own.
        self.stage = stage
        self.stale = stale
        self.reusing = reuse
        self.name = stage.name
        self.params = stage.params
        self.requires = stage.requires
        self.resources = stage.resources
        self.batch_size = stage.batch_size

    @property
    def loads_state(self) -> bool:
        return self.stage.loads_state

    def setup(self) -> None:
        # A reusing step loads its model only if a batch turns out to need it (process below).
        if not self.reusing:
            self.stage.setup()

    def describe(self) -> dict:
        return {**self.stage.describe(), "reused": self.reusing}

    def column_fingerprints(self) -> dict[str, dict]:
        return self.stage.column_fingerprints()

    def process(self, batch: pa.Table) -> StageResult:
        cols = self.stage.column_fingerprints()
        if self.reusing and all(c in batch.column_names for c in cols):
            res = self.stage.reuse(batch)
            if res is not None:
                return dataclasses.replace(res, reused=True)
            batch = batch.drop_columns(list(cols))
            self.stage.setup()  # once; a stage's setup() returns at once when it has run
        drop = [c for c in self.stale if c in batch.column_names]
        return self.stage.process(batch.drop_columns(drop) if drop else batch)


def fingerprint(fn: str, **depends) -> dict:
    """A column's fingerprint: the function that made it and what its values depend on, as JSON would hold it."""
    return _json_roundtrip({"fn": fn, **depends})
