"""A finished mmcurate run as input (`input.format: mmcurate`, `mmcurate run RECIPE --from RUN_DIR`).

The samples are the run's kept samples: the original image bytes from its output shards (`shards/[<split>/]*.tar`,
as manifest.json lists them), and from its samples.parquet the caption and meta as that run left them, the
conversation columns of instruction data, and the columns whose fingerprints manifest.json records (hashes,
sizes, embeddings, scores: pipeline.reuse decides which steps of the new run they spare). Columns that global
steps added (split, cluster ids, ...) are not carried: the new run's steps compute their own.

A shard is one output tar. Its rows come in tar order; a tar member without a samples.parquet row (the run was
edited after it finished) reads with the carried columns null, so the new run computes them. Only the run
directory is read: a shard path the manifest lists outside it is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mmcurate.io.base import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_MEMBER_BYTES, Reader
from mmcurate.io.paths import is_inside
from mmcurate.io.webdataset import WebDatasetReader
from mmcurate.pipeline.reuse import MANIFEST_COLUMNS, RUN_FORMAT, is_run_dir
from mmcurate.pipeline.schema import CONVERSATION_FIELDS, DERIVED_FIELDS, SAMPLE_SCHEMA

SHARDS_DIR = "shards"


class RunReader(Reader):
    format = RUN_FORMAT
    _CACHE_ATTRS = ("_stored",)

    def __init__(
        self,
        path,
        *,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ):
        self.root = os.fspath(path)
        if not is_run_dir(self.root):
            raise FileNotFoundError(
                f"{self.root!r} is not a finished mmcurate run (it needs manifest.json and samples.parquet); "
                "pass the output directory of a run that ended"
            )
        with open(os.path.join(self.root, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        self.max_image_bytes = max_image_bytes
        self.max_member_bytes = max_member_bytes
        self._shards, self._counts = [], {}
        for entry in manifest.get("outputs", []):
            rel = entry.get("path", "")
            if not (rel.startswith(SHARDS_DIR + "/") and rel.endswith(".tar")):
                continue
            shard = os.path.join(self.root, rel)
            if not is_inside(shard, self.root):
                raise ValueError(f"run {self.root!r}: manifest.json lists shard {rel!r} outside the run directory")
            self._shards.append(shard)
            self._counts[shard] = entry.get("samples")
        # The tars read as any WebDataset shard, with its limits and its verdicts on damage.
        self._tars = (
            WebDatasetReader(self._shards, max_image_bytes=max_image_bytes, max_member_bytes=max_member_bytes)
            if self._shards
            else None
        )
        stored = pq.read_schema(os.path.join(self.root, "samples.parquet"))
        fingerprinted = set(manifest.get(MANIFEST_COLUMNS) or {})
        carried = [f.name for f in CONVERSATION_FIELDS if f.name in stored.names]
        carried += [c for c in stored.names if c in fingerprinted and c not in carried]
        self.carried = carried
        self.schema = pa.schema(
            list(SAMPLE_SCHEMA)
            + [pa.field(c, DERIVED_FIELDS["phash"] if c == "phash" else stored.field(c).type) for c in carried]
        )
        self._stored: dict | None = None

    def shards(self) -> list[str]:
        return list(self._shards)

    def count(self, shard: str) -> int | None:
        n = self._counts.get(shard)
        return n if isinstance(n, int) else None

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.root,
            "shards": len(self._shards),
            "carried_columns": self.carried,
            "options": {
                "max_image_bytes": self.max_image_bytes,
                "max_member_bytes": self.max_member_bytes,
            },
        }

    def _stored_rows(self, shard: str) -> dict[str, dict]:
        """key -> the stored caption, meta and carried columns of the shard's samples."""
        rel = os.path.relpath(shard, os.path.join(self.root, SHARDS_DIR)).replace(os.sep, "/")
        table = pq.read_table(
            os.path.join(self.root, "samples.parquet"),
            columns=["key", "caption", "meta", *self.carried],
            filters=[("shard", "=", rel)],
        )
        rows = {}
        for row in table.to_pylist():
            if row.get("phash") is not None:
                row["phash"] = int(row["phash"], 16)
            rows[row.pop("key")] = row
        return rows

    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        stored = self._stored_rows(shard)
        for batch in self._tars.read(shard, batch_size, max_batch_bytes):
            rows = [stored.get(k) for k in batch.column("key").to_pylist()]
            cols = {name: batch.column(name) for name in SAMPLE_SCHEMA.names}
            for name in ("caption", "meta"):
                old = cols[name].to_pylist()
                cols[name] = pa.array([r[name] if r else o for r, o in zip(rows, old)], pa.string())
            for name in self.carried:
                cols[name] = pa.array([r[name] if r else None for r in rows], self.schema.field(name).type)
            yield pa.table(cols, schema=self.schema)
