"""The stage contract.

MapStage: per batch, no knowledge of other batches. `process(batch)` returns the kept rows (with any
columns it adds, and every input column, including ones it does not know) in input order, and the rejected
rows' reasons. Every input row is in exactly one of the two.

GlobalStage: runs once over the metadata of every sample that survived the map stages before it
(never the image bytes), e.g. dedup. It returns which samples it rejects (with reasons), duplicate links and
per-sample columns; the executor applies that decision when it writes the output. A step written over the
global context (``run(ctx)``, pipeline.global_phase) names samples by their run-wide SAMPLE_ID.

Parameters are declared as a dataclass `Params` on the stage; a recipe's keys are checked against
it, so an unknown key is an error naming the bad key and the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA

#: A global step's table may carry each sample's run-wide id: (survivor shard index << SHARD_SHIFT) | the row
#: in that shard's metadata file. Stable for the whole global phase, ascending in the table's row order, the
#: same in memory and sharded global mode.
SAMPLE_ID = "_sample_id"
SHARD_SHIFT = 32


_ROW_MASK = (1 << SHARD_SHIFT) - 1


def make_ids(shard_index: int, rows) -> np.ndarray:
    """int64 sample ids of rows of one survivor shard."""
    return (np.int64(shard_index) << np.int64(SHARD_SHIFT)) | np.asarray(rows, np.int64)


def id_shards(ids) -> np.ndarray:
    return np.asarray(ids, np.int64) >> np.int64(SHARD_SHIFT)


def id_rows(ids) -> np.ndarray:
    return np.asarray(ids, np.int64) & np.int64(_ROW_MASK)


def with_sample_ids(table: pa.Table, ids) -> pa.Table:
    """A result table (rejects, per-sample columns) with its rows' SAMPLE_ID column appended."""
    return table.append_column(SAMPLE_ID, pa.array(np.asarray(ids, np.int64), pa.int64()))


class StageError(ValueError):
    """A recipe or stage configuration error (misuse, not a data error)."""


class AccountingError(RuntimeError):
    """kept + rejected != read: a sample was lost or counted twice. Never expected; always fatal."""


@dataclass(frozen=True)
class Resources:
    """What one worker of the stage needs; the Ray executor maps these to num_cpus/num_gpus."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class StageResult:
    kept: pa.Table
    rejected: pa.Table = field(default_factory=REJECTS_SCHEMA.empty_table)


@dataclass
class GlobalResult:
    rejected: pa.Table = field(default_factory=REJECTS_SCHEMA.empty_table)  # key, source, stage, reason, detail
    duplicates: pa.Table = field(default_factory=DUPLICATES_SCHEMA.empty_table)
    # Per-key columns to add to the kept samples' rows (e.g. a duplicate-group id): key + columns.
    columns: pa.Table | None = None
    stats: dict = field(default_factory=dict)


@dataclass
class NoParams:
    pass


class _StageBase:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    resources: ClassVar[Resources] = Resources()

    def __init__(self, **params):
        self.params = make_params(self.name, self.Params, params)

    def setup(self) -> None:
        """Load what the stage needs once per worker (models, tables). Called before the first batch."""

    @property
    def loads_state(self) -> bool:
        """Whether setup() loads something worth keeping per worker (the Ray executor then runs the stage in an
        actor pool rather than as tasks). True when a subclass overrides setup(); a stage whose setup() only
        sometimes loads anything says so by overriding this."""
        return type(self).setup is not _StageBase.setup

    def describe(self) -> dict:
        return {
            "name": self.name,
            "params": dataclasses.asdict(self.params),
            "resources": dataclasses.asdict(self.resources),
        }


class MapStage(_StageBase):
    batch_size: ClassVar[int] = 256
    # Columns the stage reads; the executor checks they exist before the first batch.
    requires: ClassVar[tuple[str, ...]] = ("key", "source")

    def process(self, batch: pa.Table) -> StageResult:
        raise NotImplementedError


class GlobalStage(_StageBase):
    # Metadata columns the global step needs from every surviving sample (never "image").
    requires: ClassVar[tuple[str, ...]] = ("key", "source")
    # Whether run() gets the SAMPLE_ID column too (ids a result may depend on, e.g. a sample drawn by id).
    uses_sample_ids: ClassVar[bool] = False
    # The per-batch half of a global step (e.g. computing sha256 / pHash), run by the executor in the
    # map phase at this stage's recipe position; its added columns reach run() through `requires`.
    map_part: MapStage | None = None

    # True for a step written once over the global context: run(ctx) gets a MemoryGlobalContext or a
    # ShardedGlobalContext (pipeline.global_phase) and returns its rejects with their SAMPLE_ID column and its
    # per-sample columns keyed by SAMPLE_ID. False (steps not yet moved): run(table) over one table of its
    # columns, results keyed by key, and optionally run_sharded(ctx).
    runs_on_context: ClassVar[bool] = False

    def run(self, table_or_ctx) -> GlobalResult:
        raise NotImplementedError

    # A stage may also define run_sharded(ctx) -> GlobalResult | None for run: {global_mode: sharded}: the
    # same result computed over the survivor shards through ctx (pipeline.global_sharded.ShardedGlobalContext),
    # with the rejects' SAMPLE_ID column and per-sample columns keyed by SAMPLE_ID instead of key. None
    # (or no such method) runs the step in memory over its columns.


def make_params(stage_name: str, params_cls: type, given: dict):
    """Build a stage's Params from recipe keys; unknown keys and wrong types are errors that say what is valid."""
    valid = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise StageError(
            f"stage '{stage_name}': unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(valid)) or '(none)'}"
        )
    try:
        params = params_cls(**given)
    except TypeError as exc:
        raise StageError(f"stage '{stage_name}': {exc}") from exc
    check = getattr(params, "validate", None)
    if check is not None:
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise StageError(f"stage '{stage_name}': {exc}") from exc
    return params


class _Registry:
    """Recipe name -> stage class. Stages register with @registry.register."""

    def __init__(self):
        self._stages: dict[str, type] = {}

    def register(self, cls):
        if not cls.name:
            raise TypeError(f"{cls.__name__} has no recipe name")
        if cls.name in self._stages and self._stages[cls.name] is not cls:
            raise TypeError(f"stage name {cls.name!r} registered twice")
        self._stages[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._stages)

    def create(self, name: str, params: dict | None):
        self._load_builtin()
        cls = self._stages.get(name)
        if cls is None:
            raise StageError(f"unknown stage {name!r}; valid stages: {', '.join(self.names())}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise StageError(f"stage '{name}': parameters must be a mapping, got {type(params).__name__}")
        return cls(**params)

    def _load_builtin(self):
        # Importing the stage modules registers them; done lazily so `import mmcurate` stays light.
        import mmcurate.stages  # noqa: F401


registry = _Registry()
