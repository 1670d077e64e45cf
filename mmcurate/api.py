"""The Python entry points.

Recipes on disk, as the CLI runs them (``mmcurate run``), the report included::

    import mmcurate
    manifest = mmcurate.run("recipe.yaml")                     # or a dict, or a parsed Recipe
    manifest = mmcurate.run(recipe, executor="ray", address="auto", resume=True)

Stages over an in-memory table (notebooks; docs/python_api.md)::

    result = mmcurate.curate_table(df, stages=["integrity", ("image_filter", {"min_side": 64}), "exact_dedup"])
    result.kept, result.rejected, result.duplicates, result.stats

    pipe = mmcurate.Pipeline().add_stage("integrity").add_stage("phash_dedup", max_distance=6)
    result = pipe.run(table)                                   # stages set up once, reused by later runs

``curate_table`` runs the same stage objects as the executor: every map step over the table's batches in recipe
order (reader verdicts first, the map parts of global stages at their position), then the global steps through
``global_phase.run_global_phase`` over a ``MemoryGlobalContext`` (the executor's memory mode), and the kept rows
get the global steps' columns through the same ``join`` the write phase uses. Nothing is written to disk.

The executors themselves (``pipeline.executor.LocalExecutor``, ``pipeline.ray_executor.RayExecutor``) write the
outputs only; the report (``thumbs.parquet``, and ``report.html`` when the recipe asks for it) is an observer
attached here, so the pipeline never imports the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.stage import SAMPLE_ID, AccountingError, GlobalStage, MapStage, StageError

if TYPE_CHECKING:
    import pandas as pd

    from mmcurate.pipeline.recipe import Recipe

__all__ = ["CurateResult", "DataLike", "Pipeline", "StageSpec", "curate_table", "make_executor", "run"]

#: A stage as ``curate_table``/``Pipeline`` take it: a name, (name, params), {name: params} or a stage object.
StageSpec = Union[str, tuple[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]], MapStage, GlobalStage]
#: The data ``curate_table`` takes: an Arrow table, a pandas DataFrame, a mapping of columns, a list of row dicts, a
#: list of (image_bytes, caption) pairs, or a list of image bytes.
DataLike = Union[pa.Table, "pd.DataFrame", Mapping[str, Sequence[Any]], Sequence[Any]]

#: What an in-memory sample's ``source`` is when the data has none.
MEMORY_SOURCE = "memory"
#: The columns the rejected table adds to each rejected row.
REJECT_COLUMNS = ("stage", "reason", "detail")
_RESERVED = (SAMPLE_ID, *REJECT_COLUMNS)
_DEFAULT_BATCH = 256


# ---------------------------------------------------------------------------------------------
# Recipes on disk: the executors
# ---------------------------------------------------------------------------------------------
def make_executor(
    recipe: str | Path | dict | Recipe,
    *,
    executor: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str = True,
    keep_work: bool = False,
    report: bool = True,
    observers: Iterable = (),
):
    """The executor for ``recipe`` (a path to YAML/JSON, a dict, or a parsed Recipe) with the report's observer
    (unless ``report=False``) and ``observers`` attached."""
    from mmcurate.pipeline.recipe import Recipe, load_recipe, parse_recipe

    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    elif isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        raise StageError(f"recipe must be a path, a mapping or a Recipe, got {type(recipe).__name__}")
    attached = list(observers)
    if report:
        from mmcurate.report import ReportObserver

        attached.insert(0, ReportObserver())  # thumbs.parquet, and report.html when the recipe asks for it
    options = {
        "resume": resume,
        "overwrite": overwrite,
        "progress": progress,
        "keep_work": keep_work,
        "observers": attached,
    }
    if executor == "ray":
        from mmcurate.pipeline.ray_executor import RayExecutor

        return RayExecutor(recipe, address=address, **options)
    if executor != "local":
        raise StageError(f"executor must be 'local' or 'ray', got {executor!r}")
    if address is not None:
        raise StageError("address is for executor='ray'")
    from mmcurate.pipeline.executor import LocalExecutor

    return LocalExecutor(recipe, **options)


def run(recipe: str | Path | dict | Recipe, **options: Any) -> dict:
    """Run ``recipe`` (see :func:`make_executor` for the options); returns the run's manifest."""
    return make_executor(recipe, **options).run()


# ---------------------------------------------------------------------------------------------
# In memory: curate_table() and Pipeline
# ---------------------------------------------------------------------------------------------
@dataclass
class CurateResult:
    """What :func:`curate_table` returns. Every input row is in exactly one of ``kept`` and ``rejected``.

    kept:       the kept rows in input order: the input's columns (image bytes included) and every column the
                stages added (width, height, sha256, phash, image_embedding, split, ...).
    rejected:   the rejected rows in input order: the input's columns, then ``stage``, ``reason`` and ``detail``
                (the first stage that rejected the row, as in rejects.parquet).
    duplicates: one row per removed duplicate (key, duplicate_of, kind, distance, via, representative_kept), as
                duplicates.parquet.
    stats:      {"input", "kept", "rejected": counts, "stages": {step: {in, kept, rejected, seconds, reasons, ...}}}
                (map steps as in the manifest's funnel, "read" and "<global>.map" parts included).
    """

    kept: pa.Table
    rejected: pa.Table
    duplicates: pa.Table
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line per step: in, kept, rejected and the reasons."""
        lines = [f"{self.stats['input']} in, {self.stats['kept']} kept, {self.stats['rejected']} rejected"]
        for name, st in self.stats["stages"].items():
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(st["reasons"].items()))
            lines.append(f"  {name:<24} {st['in']:>8} in {st['kept']:>8} kept {st['rejected']:>8} rejected  {reasons}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"CurateResult(kept={self.kept.num_rows} rows, rejected={self.rejected.num_rows} rows, "
            f"duplicates={self.duplicates.num_rows} rows)"
        )


class Pipeline:
    """Stages to run on in-memory tables, in order (Data-Juicer's op list, NeMo Curator's ``Pipeline``)::

        pipe = Pipeline().add_stage("integrity").add_stage("image_filter", min_side=64).add_stage("exact_dedup")
        result = pipe.run(df)

    A stage's parameters are checked when it is added (an unknown key names the valid ones). The stages are set
    up (models loaded) on the first ``run`` and reused by the next ones."""

    def __init__(self, stages: Iterable[StageSpec] = (), *, batch_size: int = _DEFAULT_BATCH):
        self.batch_size = _batch_size(batch_size)
        self.stages: list[MapStage | GlobalStage] = []
        self._plan = None
        for spec in stages:
            self.add_stage(spec)

    @classmethod
    def from_recipe(cls, recipe: str | Path | dict | Recipe) -> Pipeline:
        """The stages (and run.batch_size) of a recipe; its input and output are ignored."""
        recipe = _load_recipe(recipe)
        return cls([(name, params) for name, params in recipe.stages], batch_size=recipe.batch_size)

    def add_stage(self, stage: StageSpec, /, **params: Any) -> Pipeline:
        """Append a stage: a registered name with its parameters as keywords (``add_stage("phash_dedup",
        max_distance=6)``), a (name, params) pair, a {name: params} mapping, or a stage object. Returns self."""
        built = _build_stage(stage, params)
        if any(s.name == built.name for s in self.stages):
            raise StageError(f"stage {built.name!r} is in the pipeline already (each stage runs once)")
        self.stages.append(built)
        self._plan = None
        return self

    def run(self, data: DataLike) -> CurateResult:
        """Run the stages over ``data`` (see :func:`curate_table`)."""
        if not self.stages:
            raise StageError("the pipeline has no stages; add_stage() one first")
        table = as_input_table(data)
        plan = self._set_up()
        return _curate_table(table, plan, self.batch_size)

    def _set_up(self):
        if self._plan is None:
            from mmcurate.pipeline.map_phase import StagePlan
            from mmcurate.pipeline.output_dir import preflight_stages

            preflight_stages(self.stages)
            plan = StagePlan.from_stages(self.stages)
            for _, st in plan.map_steps:  # as map_phase.setup_plan does
                st.setup()
            self._plan = plan
        return self._plan

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(repr(s.name) for s in self.stages)}])"


def curate_table(
    data: DataLike,
    stages: Iterable[StageSpec] | None = None,
    *,
    recipe: str | Path | dict | Recipe | None = None,
    batch_size: int | None = None,
) -> CurateResult:
    """Run stages over an in-memory table; returns the kept and rejected rows (:class:`CurateResult`).

    data:       a ``pyarrow.Table``, a pandas DataFrame, a mapping of columns, a list of row dicts, a list of
                ``(image_bytes, caption)`` pairs, or a list of image bytes. Column ``image`` (encoded bytes; PIL
                images are encoded as PNG) is required; ``caption``, ``key`` (generated: "00000000", ...),
                ``source`` ("memory"), ``image_ext`` (from the bytes) and ``meta`` ("{}") are optional; other
                columns travel along untouched.
    stages:     stage specs in order: "name", ("name", {params}), {"name": {params}} or stage objects.
    recipe:     instead of ``stages``: a recipe (YAML/JSON path, mapping or Recipe) whose stages and
                run.batch_size are used; its input and output are ignored.
    batch_size: rows per map batch (default: the recipe's, else 256).
    """
    if (stages is None) == (recipe is None):
        raise StageError(
            "give either stages=[...] or recipe=..., not both" if stages is not None else "give stages=[...] or recipe"
        )
    if isinstance(stages, (str, Mapping)) or (
        isinstance(stages, tuple) and len(stages) == 2 and isinstance(stages[1], Mapping)
    ):
        stages = [stages]  # one stage given on its own
    pipe = Pipeline.from_recipe(recipe) if recipe is not None else Pipeline(stages)
    if batch_size is not None:
        pipe.batch_size = _batch_size(batch_size)
    return pipe.run(data)


# ---------------------------------------------------------------------------------------------
# The run over one table
# ---------------------------------------------------------------------------------------------
def _curate_table(table: pa.Table, plan, batch_size: int) -> CurateResult:
    from mmcurate.pipeline.global_phase import MemoryGlobalContext, new_stat, run_global_phase
    from mmcurate.pipeline.map_phase import map_batch
    from mmcurate.pipeline.schema import REJECTS_SCHEMA
    from mmcurate.pipeline.write_phase import apply_turn_edits

    n_input = table.num_rows
    # Map phase: every batch through every map step (map_batch, as every executor runs them).
    stats = {name: new_stat() for name, _ in plan.map_steps}
    kept_parts, reject_parts = [], []
    for start in range(0, n_input, batch_size):
        kept, rejects = map_batch(plan, table.slice(start, batch_size), stats)
        if kept.num_rows:
            kept_parts.append(kept)
        reject_parts += rejects
    survivors = pa.concat_tables(kept_parts, promote_options="permissive") if kept_parts else table.schema.empty_table()

    # Global phase: the executor's memory mode over the survivors' columns the steps read (never the images).
    global_stats: dict = {}
    duplicates = None
    if plan.global_steps:
        needed = ["key", "source", *(c for st in plan.global_steps for c in (*st.requires, *st.reads_if_present))]
        columns = [c for c in dict.fromkeys(needed) if c in survivors.column_names]
        ctx = MemoryGlobalContext.from_table(survivors.select(columns))  # sample ids: the survivors' row numbers
        phase = run_global_phase(ctx, plan)
        global_stats, duplicates = phase.stats, phase.duplicates
        if phase.rejects.num_rows:
            reject_parts.append(phase.rejects)
        rows = np.arange(survivors.num_rows)
        if phase.rejects.num_rows:
            alive = pc.invert(pc.is_in(survivors.column("key"), value_set=phase.rejects.column("key")))
            survivors = survivors.filter(alive)
            rows = rows[alive.to_numpy(zero_copy_only=False)]
        survivors = apply_turn_edits(phase.columns.join(0, survivors, rows))  # as write_phase._kept_meta
    if duplicates is None:
        from mmcurate.pipeline.schema import DUPLICATES_OUTPUT_SCHEMA

        duplicates = DUPLICATES_OUTPUT_SCHEMA.empty_table()

    rejects = pa.concat_tables([r.cast(REJECTS_SCHEMA) for r in reject_parts]) if reject_parts else None
    rejected = _rejected_rows(table, rejects)
    if survivors.num_rows + rejected.num_rows != n_input:
        raise AccountingError(f"{n_input} rows in, {survivors.num_rows} kept + {rejected.num_rows} rejected")
    if (
        survivors.num_rows
        and rejected.num_rows
        and pc.any(pc.is_in(survivors.column("key"), value_set=rejected.column("key"))).as_py()
    ):
        raise AccountingError("a row is both kept and rejected")

    all_stats = {k: {**v, "reasons": dict(v["reasons"])} for k, v in stats.items()}
    all_stats.update({k: {**v, "reasons": dict(v["reasons"])} for k, v in global_stats.items()})
    return CurateResult(
        kept=survivors,
        rejected=rejected,
        duplicates=duplicates,
        stats={"input": n_input, "kept": survivors.num_rows, "rejected": rejected.num_rows, "stages": all_stats},
    )


def _rejected_rows(table: pa.Table, rejects: pa.Table | None) -> pa.Table:
    """The input rows that were rejected, in input order, with the stage, reason and detail of each."""
    extra = {c: pa.string() for c in REJECT_COLUMNS}
    if rejects is None or not rejects.num_rows:
        schema = table.schema
        for c, t in extra.items():
            schema = schema.append(pa.field(c, t))
        return schema.empty_table()
    keys = table.column("key")
    found = pc.index_in(rejects.column("key"), value_set=keys)
    if found.null_count:
        raise AccountingError("a stage rejected a sample that is not in the input")
    pos = found.to_numpy(zero_copy_only=False).astype(np.int64)
    if np.unique(pos).size != pos.size:
        raise AccountingError("a sample was rejected twice")
    order = np.argsort(pos, kind="stable")
    out = table.take(pa.array(pos[order]))
    for c in REJECT_COLUMNS:
        out = out.append_column(c, rejects.column(c).take(pa.array(order)).cast(pa.string()))
    return out


# ---------------------------------------------------------------------------------------------
# Inputs: stage specs and data
# ---------------------------------------------------------------------------------------------
def _batch_size(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise StageError(f"batch_size must be a positive integer, got {n!r}")
    return n


def _load_recipe(recipe) -> Recipe:
    from mmcurate.pipeline.recipe import Recipe, load_recipe, parse_recipe

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, input_path="<in-memory>")
    if isinstance(recipe, Mapping):
        return parse_recipe(dict(recipe), input_path="<in-memory>")
    raise StageError(f"recipe must be a path, a mapping or a Recipe, got {type(recipe).__name__}")


def _build_stage(spec, params: dict) -> MapStage | GlobalStage:
    from mmcurate.pipeline.stage import registry

    if isinstance(spec, (MapStage, GlobalStage)):
        if params:
            raise StageError(f"stage {spec.name!r} is built already; give its parameters to its constructor")
        return spec
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        name, given = spec[0], spec[1] if spec[1] is not None else {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        ((name, given),) = spec.items()
        given = given if given is not None else {}
    else:
        raise StageError(f"a stage is a name, (name, params), {{name: params}} or a stage object, got {_short(spec)}")
    if not isinstance(given, Mapping):
        raise StageError(f"stage '{name}': parameters must be a mapping, got {type(given).__name__}")
    stage = registry.create(str(name), {**given, **params})
    if not isinstance(stage, (MapStage, GlobalStage)):
        raise StageError(f"stage {name!r} is neither a map nor a global stage")
    return stage


def _short(value, limit: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_value(value, where: str):
    """Encoded bytes for one image value: bytes as they are, a PIL image as PNG, None as None."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if type(value).__module__.startswith("PIL."):
        import io

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(value, (str, Path)):
        raise StageError(
            f"{where}: image must be encoded bytes, got a {type(value).__name__} (a path? pass Path(p).read_bytes())"
        )
    raise StageError(f"{where}: image must be encoded bytes or a PIL image, got {type(value).__name__}")


def _rows_to_table(rows: Sequence[Any]) -> pa.Table:
    if not rows:
        raise StageError("data has no rows")
    first = rows[0]
    if isinstance(first, Mapping):
        records = []
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise StageError(f"data[{i}]: every row must be a dict like data[0], got {type(r).__name__}")
            r = dict(r)
            if "image" in r:
                r["image"] = _image_value(r["image"], f"data[{i}]")
            records.append(r)
        try:
            return pa.Table.from_pylist(records)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StageError(f"data: the rows do not make a table: {_one_line(exc)}") from None
    if isinstance(first, (tuple, list)):
        images, captions = [], []
        for i, r in enumerate(rows):
            if not isinstance(r, (tuple, list)) or len(r) != 2:
                raise StageError(f"data[{i}]: expected an (image_bytes, caption) pair, got {_short(r)}")
            images.append(_image_value(r[0], f"data[{i}]"))
            if r[1] is not None and not isinstance(r[1], str):
                raise StageError(f"data[{i}]: caption must be a string or None, got {type(r[1]).__name__}")
            captions.append(r[1])
        return pa.table({"image": pa.array(images, pa.binary()), "caption": pa.array(captions, pa.string())})
    images = [_image_value(r, f"data[{i}]") for i, r in enumerate(rows)]
    return pa.table({"image": pa.array(images, pa.binary())})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _to_arrow(data) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        df = data
        if "image" in df.columns and df["image"].dtype == object:
            df = df.assign(image=[_image_value(v, f"row {i}") for i, v in enumerate(df["image"])])
        try:
            return pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StageError(f"data: the DataFrame does not convert to Arrow: {_one_line(exc)}") from None
    if isinstance(data, Mapping):
        cols = dict(data)
        if "image" in cols:
            cols["image"] = [_image_value(v, f"image[{i}]") for i, v in enumerate(cols["image"])]
        try:
            return pa.table(cols)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StageError(f"data: the columns do not make a table: {_one_line(exc)}") from None
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _rows_to_table(data)
    raise StageError(
        "data must be a pyarrow Table, a pandas DataFrame, a mapping of columns, a list of dicts, "
        f"a list of (image_bytes, caption) pairs or a list of image bytes; got {type(data).__name__}"
    )


def as_input_table(data: DataLike) -> pa.Table:
    """``data`` as the table the stages read: key, source, image, image_ext, caption, meta (INPUT_SCHEMA's
    columns, in that order) and then the data's own columns. StageError (one line) for data that cannot be."""
    table = _to_arrow(data)
    names = table.column_names
    if len(set(names)) != len(names):
        raise StageError(f"data: column names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    clash = [c for c in _RESERVED if c in names]
    if clash:
        raise StageError(f"data: column(s) {clash} are reserved for the rejects; rename them")
    if "image" not in names:
        raise StageError(f"data needs an 'image' column of encoded image bytes; it has {names}")
    n = table.num_rows
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}

    image = table.column("image")
    if pa.types.is_large_binary(image.type) or pa.types.is_null(image.type):
        image = image.cast(pa.binary())
    elif not pa.types.is_binary(image.type):
        raise StageError(f"data: column 'image' must hold encoded image bytes, got Arrow type {image.type}")

    if "key" in names:
        key = table.column("key")
        if pa.types.is_null(key.type):
            key = key.cast(pa.string())
        if not pa.types.is_string(key.type):
            if not (pa.types.is_integer(key.type) or pa.types.is_large_string(key.type)):
                raise StageError(f"data: column 'key' must hold strings (or integers), got {key.type}")
            key = key.cast(pa.string())
        if key.null_count:
            raise StageError(f"data: column 'key' has {key.null_count} null value(s); every sample needs a key")
        if pc.count_distinct(key).as_py() != n:
            counts = pc.value_counts(key)
            repeated = [v["values"] for v in counts.to_pylist() if v["counts"] > 1][:5]
            raise StageError(f"data: keys repeat (e.g. {repeated}); every sample needs its own key")
    else:
        key = pa.array([f"{i:08d}" for i in range(n)], pa.string())
    cols["key"] = key

    if "source" in names:
        source = table.column("source").cast(pa.string())
        source = pc.fill_null(source, MEMORY_SOURCE)
    else:
        source = pa.array([MEMORY_SOURCE] * n, pa.string())
    cols["source"] = source
    cols["image"] = image

    if "image_ext" in names:
        cols["image_ext"] = table.column("image_ext").cast(pa.string())
    else:
        from mmcurate.io.keys import sniff_image_ext

        cols["image_ext"] = pa.array([sniff_image_ext(b) if b else None for b in image.to_pylist()], pa.string())

    if "caption" in names:
        caption = table.column("caption")
        if pa.types.is_null(caption.type) or pa.types.is_large_string(caption.type):
            caption = caption.cast(pa.string())
        elif not pa.types.is_string(caption.type):
            raise StageError(f"data: column 'caption' must hold text, got Arrow type {caption.type}")
        cols["caption"] = caption
    else:
        cols["caption"] = pa.nulls(n, pa.string())

    if "meta" in names:
        meta = table.column("meta")
        if not pa.types.is_string(meta.type):
            meta = pa.array(
                [json.dumps(v, ensure_ascii=False, default=str) if v is not None else "{}" for v in meta.to_pylist()],
                pa.string(),
            )
        cols["meta"] = pc.fill_null(meta, "{}")
    else:
        cols["meta"] = pa.array(["{}"] * n, pa.string())

    for name in names:
        if name not in cols:
            cols[name] = table.column(name)
    return pa.table(cols)
