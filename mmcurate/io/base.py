"""What every reader is: a list of shards and a way to stream one shard as SAMPLE_SCHEMA batches."""

from __future__ import annotations

import abc
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.params import check_bool, check_int
from mmcurate.pipeline.schema import REJECTS_SCHEMA, SAMPLE_SCHEMA

#: read_reason values meaning "the rest of this shard could not be read": the row stands for the damage, the
#: samples before it were yielded normally.
SHARD_ERROR_REASONS = frozenset({"shard_truncated", "shard_unreadable", "shard_unrecognised"})

# Per-read byte caps (reader options max_image_bytes / max_member_bytes). 64 MiB is several times the largest
# image a web crawl or photo dataset legitimately holds (a 100 MP JPEG is ~30 MB; decoders refuse more pixels
# than that by default), yet keeps one hostile file from taking the process's memory; a 256-row batch is cut
# at max_batch_bytes anyway. Captions and meta are text: 16 MiB is far past any real one.
DEFAULT_MAX_IMAGE_BYTES = 64 << 20
DEFAULT_MAX_MEMBER_BYTES = 16 << 20

# A batch is also cut when its image bytes pass this size: a binary column holds at most 2 GiB, and a
# batch of 256 large scans would pass it.
DEFAULT_MAX_BATCH_BYTES = 256 << 20


class Reader(abc.ABC):
    """A dataset split into shards, the unit of parallelism, progress and resume.

    Readers are picklable and cheap to send to workers: anything loaded lazily (a directory listing, a
    caption table) is cached per process and dropped when pickled.
    """

    format: str = ""
    _CACHE_ATTRS: tuple[str, ...] = ()
    #: The schema of the batches `read` yields: SAMPLE_SCHEMA, or SAMPLE_SCHEMA plus a reader's own columns after it
    #: (the LLaVA reader's conversation columns), which flow through the stages to samples.parquet.
    schema: pa.Schema = SAMPLE_SCHEMA

    @abc.abstractmethod
    def shards(self) -> list[str]:
        """Stable, sorted shard ids; `read` accepts exactly these."""

    @abc.abstractmethod
    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        """The shard's samples, in a stable order, as SAMPLE_SCHEMA tables of at most batch_size rows."""

    def count(self, shard: str) -> int | None:
        """The shard's sample count when known without reading it (for progress bars), else None."""
        return None

    @abc.abstractmethod
    def describe(self) -> dict:
        """What the manifest records about the input: format, path, shard count, options."""

    def start_notes(self) -> list[str]:
        """One-line notes worth showing before a run (images found but no captions, or the reverse; listed images
        not on disk), each naming the option that fixes it. Cheap: the listing and at most the first rows."""
        return []

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._CACHE_ATTRS:
            state[name] = None
        return state


def check_byte_limit(name: str, value) -> int:
    """A reader's byte-limit option: a positive integer number of bytes (pipeline.params.check_int: a bool is
    refused, though Python calls it an int)."""
    return check_int(name, value, 1)


#: A reader's true/false option.
check_flag = check_bool


def one_line(text: str, limit: int = 500) -> str:
    """A message for a rejects row: one line, bounded (messages quote untrusted names and library errors)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_batch_size(batch_size: int, max_batch_bytes: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(max_batch_bytes, int) or max_batch_bytes < 1:
        raise ValueError(f"max_batch_bytes must be a positive integer, got {max_batch_bytes!r}")


class Batcher:
    """Collects sample rows; hands out `schema` tables (SAMPLE_SCHEMA, or a reader's schema with its own columns
    after SAMPLE_SCHEMA's) by row count or image bytes."""

    def __init__(
        self, batch_size: int, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES, schema: pa.Schema = SAMPLE_SCHEMA
    ):
        check_batch_size(batch_size, max_batch_bytes)
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.schema = schema
        self._extra = schema.names[len(SAMPLE_SCHEMA) :]
        self._reset()

    def _reset(self):
        self._cols = {f.name: [] for f in self.schema}
        self._bytes = 0

    def add(
        self,
        key: str,
        source: str,
        image: bytes | None,
        image_ext: str | None,
        caption: str | None,
        meta: str,
        *,
        read_reason: str | None = None,
        read_detail: str | None = None,
        extra: dict | None = None,
    ) -> pa.Table | None:
        """Add one row; returns a full batch when this row completes one. A row the reader could not read
        carries read_reason/read_detail (see split_read_rejects). `extra`: the values of the schema's own
        columns (null where left out)."""
        c = self._cols
        for name in self._extra:
            c[name].append(extra.get(name) if extra else None)
        c["read_reason"].append(read_reason)
        c["read_detail"].append(read_detail)
        c["key"].append(key)
        c["source"].append(source)
        c["image"].append(image)
        c["image_ext"].append(image_ext)
        c["caption"].append(caption)
        c["meta"].append(meta)
        self._bytes += len(image) if image is not None else 0
        if len(c["key"]) >= self.batch_size or self._bytes >= self.max_batch_bytes:
            return self.flush()
        return None

    def add_reject(
        self, key: str, source: str, reason: str, detail: str, image_ext: str | None = None
    ) -> pa.Table | None:
        """A row for a sample that could not be read: no image, caption or meta of it travels on."""
        return self.add(key, source, None, image_ext, None, "{}", read_reason=reason, read_detail=one_line(detail))

    def flush(self) -> pa.Table | None:
        if not self._cols["key"]:
            return None
        table = pa.table(self._cols, schema=self.schema)
        self._reset()
        return table


def split_read_rejects(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(the rows that read fine, with the INPUT_SCHEMA columns and a reader's own after them; the rows a reader
    marked unreadable as REJECTS_SCHEMA rejects of stage "read"). Batches without the read_* columns pass through
    unchanged."""
    if "read_reason" not in batch.column_names:
        return batch, REJECTS_SCHEMA.empty_table()
    bad = pc.is_valid(batch.column("read_reason"))
    clean = batch.drop_columns([c for c in ("read_reason", "read_detail") if c in batch.column_names])
    if not pc.any(bad).as_py():
        return clean, REJECTS_SCHEMA.empty_table()
    failed = batch.filter(bad)
    rejects = pa.table(
        {
            "key": failed.column("key"),
            "source": failed.column("source"),
            "stage": pa.array(["read"] * failed.num_rows, pa.string()),
            "reason": failed.column("read_reason"),
            "detail": failed.column("read_detail"),
        }
    )
    return clean.filter(pc.invert(bad)), rejects.cast(REJECTS_SCHEMA)
