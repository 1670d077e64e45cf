"""The run's input as the recipe states it: its reader (io.open_reader), cut to the first `run.limit` samples when
the recipe (or `--limit N`) asks for a quick try on a slice.

The first N samples are those of the shards in their order, each shard's in its own order: the same N in every
run, so a limited run can be resumed and compared. Shards past the N-th sample are not read at all; a shard whose
sample count the reader does not know without reading is read once to count it (only shards before the N-th
sample are).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from mmcurate.io.base import DEFAULT_MAX_BATCH_BYTES, Reader
from mmcurate.pipeline.recipe import Recipe


def open_input(recipe: Recipe) -> Reader:
    from mmcurate.io import open_reader

    reader = open_reader(recipe.input_path, format=recipe.input_format, **recipe.input_options)
    return LimitedReader(reader, recipe.limit) if recipe.limit is not None else reader


class LimitedReader(Reader):
    """`reader`'s first `limit` samples (module docstring)."""

    _CACHE_ATTRS = ("_quotas",)

    def __init__(self, reader: Reader, limit: int):
        self.reader = reader
        self.limit = limit
        self.format = reader.format
        self.schema = reader.schema
        self._quotas: dict[str, int] | None = None

    def _shard_quotas(self) -> dict[str, int]:
        if self._quotas is None:
            quotas, left = {}, self.limit
            for shard in self.reader.shards():
                if left <= 0:
                    break
                n = self.reader.count(shard)
                if n is None:
                    n = sum(b.num_rows for b in self.reader.read(shard))
                if n:
                    quotas[shard] = min(n, left)
                    left -= quotas[shard]
            self._quotas = quotas
        return self._quotas

    def shards(self) -> list[str]:
        return list(self._shard_quotas())

    def count(self, shard: str) -> int | None:
        return self._shard_quotas().get(shard)

    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        left = self._shard_quotas().get(shard, 0)
        for batch in self.reader.read(shard, batch_size, max_batch_bytes):
            if left <= 0:
                return
            if batch.num_rows > left:
                batch = batch.slice(0, left)
            left -= batch.num_rows
            yield batch

    def describe(self) -> dict:
        return {**self.reader.describe(), "limit": self.limit}

    def start_notes(self) -> list[str]:
        return self.reader.start_notes()

    def __getattr__(self, name):  # what callers read of the reader beyond the Reader contract (e.g. its root)
        if name in ("reader", "__setstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.reader, name)
