"""Phase 3, the write phase: the kept samples' original bytes into output shards, and the samples and rejects
tables.

Shard by shard: the survivors' metadata from _work/meta, minus the global rejects, joined with the columns the
global steps added (``GlobalPhaseResult.columns.join``, the same in either global mode); then the input shard
is re-read for the original bytes of its kept samples, which are copied, never re-encoded, into
out/shards/NNNNN.tar (out/shards/<split>/NNNNN.tar when a split stage assigned splits). The same input gives
byte-identical shards. Memory holds one shard's metadata and one batch.

Conversation edits of global steps (instruction data). A global step cannot change a column the map phase wrote
(the added columns are joined only where absent), so a step that edits conversations (answer_balance removing
question/answer pairs, option_order rewriting options) returns its edits as a per-sample column named
``<step>_turn_edits`` (TURN_EDITS_TYPE: a list of ``{turn, text}``, text null removing that turn), null where it
edits nothing. Turn indices always refer to the turns as the map phase left them, so the edits of several steps
compose: they are applied in step order (a later text for one turn wins; a removal wins over any text), removals
last. Later global steps see the edited conversation (``edited_turns``); the write phase applies every such column
to the kept rows through stages.batch.set_turns (``apply_turn_edits``), so `turns`, `question`/`answer`, the
caption and the record in `meta` (the output shard's JSON, samples.parquet, the LLaVA export) agree. The edit
columns stay in samples.parquet: what each step changed remains visible. A run without them is written as before.

Appends (negative_synthesis adding question/answer pairs): an edit whose turn is APPEND_TURN (-1) appends its text as
a new turn after the conversation; one step's appends are pairs, so they take the roles human, gpt, human, ... in
order. Appended turns get the indices after the turns before them (the map phase's, then earlier steps' appends), so
a later step can edit or remove them like any turn. An appended turn is synthetic: its element of the record's
`conversations` carries ``"synthetic": true`` (stages.batch.sync_meta), in the output shards, samples.parquet and
the LLaVA export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.io.conversations import GPT, HUMAN
from mmcurate.pipeline.global_phase import GlobalPhaseResult
from mmcurate.pipeline.manifest import json_default
from mmcurate.pipeline.recipe import Recipe
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import AccountingError

#: A global step's conversation edits (module docstring): a column named ``<step>_turn_edits`` of this type.
TURN_EDITS_SUFFIX = "_turn_edits"
TURN_EDIT_TYPE = pa.struct([pa.field("turn", pa.int32()), pa.field("text", pa.string())])
TURN_EDITS_TYPE = pa.list_(TURN_EDIT_TYPE)
#: An edit's turn that appends a turn instead of naming one (module docstring).
APPEND_TURN = -1

#: The reader's columns; every other scalar column of a kept sample goes into its JSON under "mmcurate".
INPUT_COLUMNS = ("key", "source", "image", "image_ext", "caption", "meta")


@dataclass
class WrittenShards:
    kept: int  # rows of samples.parquet
    rejected: int  # rows of rejects.parquet
    shard_files: list[tuple]  # (path, samples, sha256) per output shard, splits in order


def write_shards(
    recipe: Recipe, out: Path, work: Path, reader, shards: list[str], phase: GlobalPhaseResult, observers=()
) -> WrittenShards:
    """out/shards/, samples.parquet and rejects.parquet. Each batch of the input's second read goes to the
    observers' on_input_batch, with its shard's map rejects."""
    from mmcurate.io.atomic import atomic_output

    meta_files = [work / "meta" / f"{i:05d}.parquet" for i in range(len(shards))]
    out_schema = samples_schema([pq.read_schema(f) for f in meta_files if f.exists()], phase.columns.schema_tables())
    gone_ids = sample_ids(phase.rejects) if phase.rejects.num_rows else None
    writers = _SplitWriters(out, recipe.shard_size, by_split="split" in out_schema.names)
    n_written = 0
    n_rejected = 0
    with (
        atomic_output(out / "samples.parquet") as samples_f,
        atomic_output(out / "rejects.parquet") as rejects_f,
    ):
        samples_pw = pq.ParquetWriter(samples_f, out_schema)
        rejects_pw = pq.ParquetWriter(rejects_f, REJECTS_SCHEMA)
        for i, shard in enumerate(shards):
            rej_path = work / "rejects" / f"{i:05d}.parquet"
            rej = pq.read_table(rej_path) if rej_path.exists() else REJECTS_SCHEMA.empty_table()
            if rej.num_rows:
                rejects_pw.write_table(rej.cast(REJECTS_SCHEMA))
                n_rejected += rej.num_rows
            meta = _kept_meta(i, meta_files[i], gone_ids, phase.columns)
            kept_rows = {}
            if meta is not None:
                kept_rows = {
                    (s, k): r
                    for r, (k, s) in enumerate(zip(meta.column("key").to_pylist(), meta.column("source").to_pylist()))
                }
            rows_meta = rows_for_output(meta) if meta is not None and meta.num_rows else {}
            written, names = [], []  # this shard's kept rows and their output shards, in write order
            splits = meta.column("split").to_pylist() if writers.by_split and meta is not None else None
            for batch in reader.read(shard, batch_size=recipe.batch_size):
                for observer in observers:
                    observer.on_input_batch(batch, rej)
                keys = batch.column("key").to_pylist()
                srcs = batch.column("source").to_pylist()
                rows = [kept_rows.get((s, k)) for k, s in zip(keys, srcs)]
                groups: dict = {}
                for j, r in enumerate(rows):  # per split, keeping input order within each
                    if r is not None:
                        groups.setdefault(splits[r] if splits else None, []).append(j)
                for split, js in groups.items():
                    sub_rows = [rows[j] for j in js]
                    names += writers.write(split, output_table(batch.take(js), rows_meta, sub_rows))
                    written += sub_rows
            n_meta = meta.num_rows if meta is not None else 0
            if len(written) != n_meta:
                raise AccountingError(
                    f"shard {shard}: {n_meta} samples kept but {len(written)} found again "
                    f"in the input (was the input changed during the run?)"
                )
            if written:
                samples_pw.write_table(samples_table(meta.take(written), names, out_schema))
                n_written += len(written)
        if phase.rejects.num_rows:
            rejects_pw.write_table(phase.rejects)
            n_rejected += phase.rejects.num_rows
        samples_pw.close()
        rejects_pw.close()
    shard_files = writers.close()
    if n_written != phase.n_kept:
        raise AccountingError(f"{phase.n_kept} samples survived the global steps but {n_written} were written")
    return WrittenShards(n_written, n_rejected, shard_files)


def _kept_meta(index: int, meta_file: Path, gone_ids, columns) -> pa.Table | None:
    """A shard's survivors of the global steps, with the columns those added; None when the map kept none."""
    if not meta_file.exists():
        return None
    meta = pq.read_table(meta_file)
    rows = np.arange(meta.num_rows)
    if gone_ids is not None:
        alive = pc.invert(pc.is_in(sample_ids(meta), value_set=gone_ids))
        meta = meta.filter(alive)
        rows = rows[alive.to_numpy(zero_copy_only=False)]
    return apply_turn_edits(columns.join(index, meta, rows))


def turn_edit_columns(names) -> list[str]:
    """The conversation-edit columns among ``names``, in their order (the order the steps ran)."""
    return [c for c in names if c.endswith(TURN_EDITS_SUFFIX)]


def edited_turns(turns: list[dict] | None, edits, keep_removed: bool = False) -> list | None:
    """``turns`` ({"role", "text"} dicts) with ``edits`` applied: an iterable of edit lists (each None or a list of
    {"turn", "text"}), in step order. keep_removed: a removed turn stays as None, so that indices still refer to the
    original turns (what a later step edits by); else removed turns are dropped. An index out of range is a
    ValueError (a step's bug, never the data's). Turn APPEND_TURN (-1) appends a turn, marked {"synthetic": True};
    one step's appends take the roles human, gpt, human, ... (question/answer pairs) and the indices after every
    turn before them, which a later step's edits may name."""
    if turns is None:
        return None
    out: list = [dict(t) for t in turns]
    removed = set()
    for edit_list in edits:
        appended = 0
        for e in edit_list or ():
            k = e["turn"]
            if k == APPEND_TURN:  # an appended question/answer pair's turn (module docstring)
                if e["text"] is None:
                    raise ValueError("a turn edit appends a turn without text")
                out.append({"role": HUMAN if appended % 2 == 0 else GPT, "text": e["text"], "synthetic": True})
                appended += 1
                continue
            if k is None or not 0 <= k < len(out):
                raise ValueError(f"a turn edit names turn {k} of a conversation of {len(out)} turns")
            if e["text"] is None:
                removed.add(k)
            else:
                out[k]["text"] = e["text"]
    if keep_removed:
        return [None if k in removed else t for k, t in enumerate(out)]
    return [t for k, t in enumerate(out) if k not in removed]


def apply_turn_edits(meta: pa.Table) -> pa.Table:
    """The rows' conversations with every edit column applied (module docstring); the table as it is when it has no
    edit column or no row is edited."""
    cols = turn_edit_columns(meta.column_names)
    if not cols or "turns" not in meta.column_names or not meta.num_rows:
        return meta
    lists = [meta.column(c).to_pylist() for c in cols]
    edited = [any(e[r] for e in lists) for r in range(meta.num_rows)]
    if not any(edited):
        return meta
    from mmcurate.stages.batch import set_turns

    turns = meta.column("turns").to_pylist()
    new = [edited_turns(t, [e[r] for e in lists]) if edited[r] else t for r, t in enumerate(turns)]
    return set_turns(meta, new)


class _SplitWriters:
    """One ShardWriter per split (or one for all when no split was assigned), opened on first use."""

    def __init__(self, out: Path, shard_size: int, by_split: bool):
        self.out, self.shard_size, self.by_split = out, shard_size, by_split
        self.writers: dict = {}
        self.counts: dict = {}  # samples written per split

    def write(self, split, table: pa.Table) -> list[str]:
        """Writes the rows; returns the output shard of each, relative to out/shards/."""
        from mmcurate.io import ShardWriter

        if split not in self.writers:
            subdir = f"shards/{split}" if self.by_split else "shards"
            self.writers[split] = ShardWriter(self.out, self.shard_size, subdir=subdir)
            self.counts[split] = 0
        w = self.writers[split]
        w.write(table)
        base = self.counts[split]
        self.counts[split] = base + table.num_rows
        prefix = f"{split}/" if self.by_split else ""
        return [prefix + w.shard_path(c // self.shard_size).name for c in range(base, base + table.num_rows)]

    def close(self) -> list[tuple]:
        files = [f for split in sorted(self.writers, key=str) for f in self.writers[split].close()]
        if not self.writers:  # nothing kept: still leave an (empty) shards/ directory
            (self.out / "shards").mkdir(parents=True, exist_ok=True)
        return files


def sample_ids(table: pa.Table) -> pa.Array:
    """(source, key) as one string: keys are only unique within a shard."""
    return pc.binary_join_element_wise(table.column("source"), table.column("key"), "\x00")


def rows_for_output(samples: pa.Table) -> dict:
    """Per kept row: the cleaned caption and the JSON metadata written next to the image."""
    # Vectors (embeddings) stay in samples.parquet; the per-sample JSON gets scalars only.
    derived = [
        c
        for c, t in zip(samples.column_names, samples.schema.types)
        if c not in INPUT_COLUMNS
        and not pa.types.is_list(t)
        and not pa.types.is_fixed_size_list(t)
        and not pa.types.is_large_list(t)
    ]
    cols = {c: samples.column(c).to_pylist() for c in derived}
    captions = samples.column("caption").to_pylist() if "caption" in samples.column_names else [None] * samples.num_rows
    metas = samples.column("meta").to_pylist() if "meta" in samples.column_names else [None] * samples.num_rows
    out: dict = {"caption": captions, "meta": []}
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
            elif c == "pdq" and v is not None:
                v = v.hex()  # Meta's 64-digit hex form of the PDQ code
            if isinstance(v, bytes):
                continue
            fields[c] = v
        meta["mmcurate"] = fields
        out["meta"].append(json.dumps(meta, ensure_ascii=False, sort_keys=True, default=json_default))
    return out


def output_table(batch: pa.Table, rows_meta: dict, rows: list[int]) -> pa.Table:
    """What a ShardWriter takes: the original bytes, and the caption and JSON of rows_for_output."""
    return pa.table(
        {
            "key": batch.column("key"),
            "image": batch.column("image"),
            "image_ext": batch.column("image_ext"),
            "caption": pa.array([rows_meta["caption"][r] for r in rows], pa.string()),
            "meta": pa.array([rows_meta["meta"][r] for r in rows], pa.string()),
        }
    )


def samples_schema(meta_schemas: list, extras: list) -> pa.Schema:
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


def samples_table(meta: pa.Table, shard_names: list[str], schema: pa.Schema) -> pa.Table:
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
