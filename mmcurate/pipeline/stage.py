"""The stage contract.

MapStage: per batch, no knowledge of other batches. `process(batch)` returns the kept rows (with any
columns it adds, and every input column, including ones it does not know) in input order, and the rejected
rows' reasons. Every input row is in exactly one of the two.

GlobalStage: runs once over the metadata of every sample that survived the map stages before it
(never the image bytes), e.g. dedup. It returns which samples it rejects (with reasons), duplicate links and
per-sample columns, naming samples by their run-wide SAMPLE_ID; the executor applies that decision when it
writes the output (see GlobalStage).

Parameters are declared as a dataclass `Params` on the stage; a recipe's keys are checked against
it, so an unknown key is an error naming the bad key and the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Self

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
    # True when the verdict came from columns an earlier run stored, nothing recomputed (pipeline.reuse); the
    # manifest counts such rows per step ("reused").
    reused: bool = False


@dataclass
class StepStats:
    """A global step's figures for the manifest and the report, one dataclass per step (beside the step), read
    by field. Every field defaults to None: a figure that does not apply stays None and is left out of the
    manifest."""

    seconds: float | None = None

    def to_dict(self) -> dict:
        """The manifest's form: the fields that apply, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data) -> Self:
        """From a manifest's stats: the fields it lacks are None. Values are not checked (a manifest may come from
        anywhere): readers format them defensively."""
        data = data if isinstance(data, dict) else {}
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


def stats_dict(stats) -> dict:
    """A step's stats for the manifest: a StepStats' to_dict(), or a plain dict (a third-party step's) as it is."""
    return stats.to_dict() if isinstance(stats, StepStats) else dict(stats or {})


@dataclass
class GlobalResult:
    # key, source, stage, reason, detail and the rejected samples' SAMPLE_ID
    rejected: pa.Table = field(default_factory=lambda: with_sample_ids(REJECTS_SCHEMA.empty_table(), []))
    duplicates: pa.Table = field(default_factory=DUPLICATES_SCHEMA.empty_table)
    # Per-sample columns to add to the kept samples' rows (e.g. a cluster id): SAMPLE_ID + columns.
    columns: pa.Table | None = None
    stats: StepStats | dict = field(default_factory=StepStats)


@dataclass
class NoParams:
    pass


class _StageBase:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # What one worker needs, and (``requires``) which columns the stage reads: class defaults that a stage's
    # __init__ may set per instance from its parameters (e.g. a device or a score column).
    resources: Resources = Resources()
    requires: tuple[str, ...] = ("key", "source")

    def __init__(self, **params):
        self.params = make_params(self.name, self.Params, params)
        self.requires = tuple(type(self).requires)
        self.resources = type(self).resources

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
    requires: tuple[str, ...] = ("key", "source")

    def process(self, batch: pa.Table) -> StageResult:
        raise NotImplementedError

    # Reuse (pipeline.reuse): a run whose input is an earlier run's output skips a stage whose columns that run
    # stored, when they were computed the same way.
    def column_fingerprints(self) -> dict[str, dict]:
        """The columns this stage adds that a later run may reuse, each with what determines its values (the
        function and the parameters and model it depends on, never a device or thread count). {} (the
        default): nothing reusable."""
        return {}

    def reuse(self, batch: pa.Table) -> StageResult | None:
        """The stage's verdict on a batch that already holds its columns from an identical computation
        (column_fingerprints all equal): by default every row kept. A stage whose rule reads other inputs too
        re-applies it here; None: compute after all (the stored columns are dropped first)."""
        return StageResult(batch)


class GlobalStage(_StageBase):
    """A step over every survivor at once. ``run(ctx)`` is its one method, whichever way the survivors are held:
    ``ctx`` is a global context (pipeline.global_phase.MemoryGlobalContext, or
    pipeline.global_sharded.ShardedGlobalContext for ``run: {global_mode: sharded}``) giving the survivors'
    columns as shard views, ``map_fn`` for the step's tasks, ``fetch(ids, columns)``, a partition store
    (``partitions(step)``: in RAM or spilled under _work/) and the primitives whose best form differs (Hamming
    pairs, key ranks). The step's result names samples by SAMPLE_ID: its rejects carry a SAMPLE_ID column,
    its per-sample columns are SAMPLE_ID + columns; ``key`` appears in outputs only. The result must not
    depend on the context (tests run every step over one partition, N partitions and tasks in any order)."""

    # Metadata columns the global step needs from every surviving sample (never "image").
    requires: tuple[str, ...] = ("key", "source")
    # Columns it reads when the input has them (e.g. "has_image", only instruction data has it): loaded with
    # `requires` in memory mode too, so the step sees the same columns in either context; never an error.
    reads_if_present: tuple[str, ...] = ()
    # The per-batch half of a global step (e.g. computing sha256 / pHash), run by the executor in the
    # map phase at this stage's recipe position; its added columns reach run() through `requires`.
    map_part: MapStage | None = None

    def run(self, ctx) -> GlobalResult:
        raise NotImplementedError


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

    def stage_class(self, name: str) -> type:
        """The class registered as `name`; StageError naming the valid stages when there is none."""
        self._load_builtin()
        cls = self._stages.get(name)
        if cls is None:
            raise StageError(f"unknown stage {name!r}; valid stages: {', '.join(self.names())}")
        return cls

    def create(self, name: str, params: dict | None):
        cls = self.stage_class(name)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise StageError(f"stage '{name}': parameters must be a mapping, got {type(params).__name__}")
        return cls(**params)

    def _load_builtin(self):
        # Importing the stage modules registers them; done lazily so `import mmcurate` stays light.
        import mmcurate.stages  # noqa: F401


registry = _Registry()
