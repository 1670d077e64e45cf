"""The first map step of every run: the reader's own verdicts.

A reader that cannot read a sample (a path outside the input root, not a regular file, over the size cap, a
bad key, the damaged tail of a shard) does not raise: it yields the row with `read_reason` / `read_detail`
set. This step turns those rows into rejects of stage "read" and hands the rest on without the read_*
columns. Being an ordinary map step, it runs the same way under every executor, and its counts appear in
the funnel like any stage's.

Shard damage (a truncated or unreadable shard: io.base.SHARD_ERROR_REASONS) is one such reject; the map
phase also lists it in the shard's done record (`shard_errors`), and `run.on_shard_error: fail` makes it
fatal.
"""

from __future__ import annotations

import pyarrow as pa

from mmcurate.io.base import SHARD_ERROR_REASONS, split_read_rejects
from mmcurate.pipeline.stage import MapStage, StageResult

READ_STEP = "read"


class ReadRejects(MapStage):
    """Rejects the rows a reader marked unreadable (stage "read"); not a recipe stage, always first."""

    name = READ_STEP

    def process(self, batch: pa.Table) -> StageResult:
        kept, rejected = split_read_rejects(batch)
        return StageResult(kept, rejected)


def shard_errors(rejects: pa.Table) -> list[dict]:
    """The shard-level read errors among a shard's rejects, as the done record and the manifest list them."""
    if rejects.num_rows == 0:
        return []
    rows = rejects.select(["key", "source", "stage", "reason", "detail"]).to_pylist()
    return [
        {"shard": r["source"], "key": r["key"], "reason": r["reason"], "detail": r["detail"]}
        for r in rows
        if r["stage"] == READ_STEP and r["reason"] in SHARD_ERROR_REASONS
    ]
