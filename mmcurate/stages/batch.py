"""Batch helpers every stage uses: reading the image bytes, adding columns, splitting a batch into kept and
rejected rows, checking input columns, and the CPU threads / resources of a stage that uses all cores."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.schema import DERIVED_FIELDS, TURN_TYPE, rejects_table
from mmcurate.pipeline.stage import Resources, StageError, StageResult

#: The reject of a sample without an image member (reason, detail).
MISSING_IMAGE = ("missing_image", "the sample has no image member")


def text_only_rows(batch: pa.Table) -> np.ndarray:
    """True for the rows of text-only samples (`has_image` false: a conversation of instruction data without an
    image), which the image stages pass untouched, adding null columns; all False without a `has_image` column
    (every other input), where a null image is a missing image."""
    if "has_image" not in batch.column_names:
        return np.zeros(batch.num_rows, dtype=bool)
    return ~pc.fill_null(batch.column("has_image"), True).to_numpy(zero_copy_only=False).astype(bool)


def masked(values, mask: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """An Arrow array of ``values`` with null where ``mask`` (the text-only rows' derived columns)."""
    return pa.array(np.asarray(values), type=type, mask=mask)


def blob_views(column) -> list:
    """An Arrow binary column as a list of zero-copy memoryviews (None for nulls)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list = []
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        _validity, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(
            offsets_buf, dtype=offset_type, count=n + 1, offset=chunk.offset * np.dtype(offset_type).itemsize
        )
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        out.extend(data[offsets[k] : offsets[k + 1]] if valid[k] else None for k in range(n))
    return out


def with_column(table: pa.Table, name: str, values, type: pa.DataType | None = None) -> pa.Table:
    """Add a column, replacing an earlier one of the same name. ``values``: an Arrow array (used as it is) or
    Python / numpy values, typed as ``type`` says, else as DERIVED_FIELDS says for the shared names, else as
    Arrow infers."""
    array = pa.array(values, type=type if type is not None else DERIVED_FIELDS.get(name))
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, array) if i >= 0 else table.append_column(name, array)


def reject_rows(batch: pa.Table, stage: str, rows, reasons, details) -> StageResult:
    """Rows ``rows`` (ascending indices) rejected with ``reasons`` / ``details`` (one per rejected row, or one
    reason for all of them); the other rows kept, in input order."""
    rows = np.asarray(rows, dtype=np.int64)
    if not rows.size:
        return StageResult(batch)
    rejected = np.zeros(batch.num_rows, dtype=bool)
    rejected[rows] = True
    keys = batch.column("key").take(rows).to_pylist()
    sources = batch.column("source").take(rows).to_pylist()
    return StageResult(batch.filter(pa.array(~rejected)), rejects_table(keys, sources, stage, reasons, details))


def kept_and_rejected(batch: pa.Table, stage: str, rejected: np.ndarray, reasons: list, details: list) -> StageResult:
    """Kept rows = ~rejected; reasons/details are per row (read where rejected)."""
    idx = np.flatnonzero(rejected)
    return reject_rows(batch, stage, idx, [reasons[i] for i in idx], [details[i] for i in idx])


def require_columns(table: pa.Table, stage: str, columns) -> None:
    """StageError naming the columns of ``columns`` the table lacks, and those it has."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise StageError(
            f"stage '{stage}': input lacks column(s) {', '.join(missing)}; present: {', '.join(table.column_names)}"
        )


def cpu_threads(num_threads) -> int:
    """The threads a stage's ``num_threads`` stands for: itself, or every core when null."""
    return num_threads or os.cpu_count() or 1


def cpu_resources(num_threads) -> Resources:
    """The resources of a stage that runs on ``num_threads`` CPU threads (null: all cores)."""
    return Resources(cpus=float(cpu_threads(num_threads)))


# ---------------------------------------------------------------------------------------------------------
# conversations (instruction data read by the LLaVA reader: pipeline.schema.CONVERSATION_FIELDS)


def sync_meta(meta: str | None, turns: list[dict] | None) -> str | None:
    """The record (meta JSON) with its conversations rewritten from `turns` (io.conversations.record_with_turns),
    as compact JSON; the meta as it is when it already agrees, or is not a JSON object. A turn marked
    {"synthetic": True} (appended by a global step: pipeline.write_phase) is marked so in the record."""
    from mmcurate.io.conversations import record_with_turns, turns_from_record

    if turns is None or not meta:
        return meta
    try:
        record = json.loads(meta)
    except (ValueError, RecursionError):
        return meta
    if not isinstance(record, dict) or turns_from_record(record) == turns:
        return meta
    record = record_with_turns(record, turns)
    if any(t.get("synthetic") for t in turns if isinstance(t, dict)):  # turns a global step appended
        conv = record["conversations"]
        for k, t in enumerate(turns):
            if isinstance(t, dict) and t.get("synthetic") and isinstance(conv[k], dict):
                conv[k] = {**conv[k], "synthetic": True}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def set_turns(batch: pa.Table, turns: list, *, sync_record: bool = True) -> pa.Table:
    """The one way a stage edits conversations: `turns` (one list of {"role", "text"} per row, or None) replace the
    `turns` column, and what derives from them follows: `n_turns`, `question`, `answer`; `caption` where it still
    was the first answer (a caption stage's edit of it stays); and, with sync_record, the record in `meta`, so the
    edit is what the output shard's JSON, samples.parquet and the export hold. A row whose turns did not change
    keeps its meta byte for byte."""
    from mmcurate.io.conversations import conversation_columns

    old = batch.column("turns").to_pylist()
    derived = [conversation_columns(t) for t in turns]
    answers = [d[2] for d in derived]
    out = with_column(batch, "turns", turns, pa.list_(TURN_TYPE))
    old_answers = batch.column("answer").to_pylist() if "answer" in batch.column_names else [None] * len(turns)
    out = with_column(out, "n_turns", [d[0] for d in derived], pa.int32())
    out = with_column(out, "question", [d[1] for d in derived], pa.string())
    out = with_column(out, "answer", answers, pa.string())
    if "caption" in batch.column_names:
        captions = batch.column("caption").to_pylist()
        follows = [a if c == oa else c for c, oa, a in zip(captions, old_answers, answers)]
        out = with_column(out, "caption", follows, pa.string())
    if sync_record and "meta" in batch.column_names:
        metas = batch.column("meta").to_pylist()
        new = [m if t == o else sync_meta(m, t) for m, t, o in zip(metas, turns, old)]
        out = with_column(out, "meta", new, pa.string())
    return out
