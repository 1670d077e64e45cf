"""Hugging Face datasets with the image bytes inside (format `hf`): Parquet files or `datasets` Arrow files whose
image column is the `datasets` Image feature (struct {bytes: binary, path: string}) or a plain binary column
(img2dataset's `output_format: parquet`: `jpg`/`png`/`webp` with `key`, `caption`, `url`, ...).

- Input: one .parquet or .arrow file; a folder of .parquet files, searched recursively (the Hub's `data/*.parquet`,
  `data/<split>-00000-of-00001.parquet`, split subfolders, img2dataset's `00000.parquet`); a `save_to_disk` folder
  (state.json + data-*.arrow), or a DatasetDict's (dataset_dict.json + one such folder per split). `split`
  keeps the files of one split: a folder of that name on the path, or a file name `<split>-...`, `<split>_...`,
  `<split>.parquet`.
- Columns: `image_column` (default: the first of IMAGE_COLUMN_NAMES holding image bytes, else the first column
  that does), `caption_column` (table.CAPTION_COLUMNS; none: captions null, and start_notes says so), `key_column`
  (default `key` or `__key__` when present). The other columns become meta (nulls left out); other binary columns
  are left out of meta. An Image struct's `path` goes to meta as `image_path`.
- Keys: the key column's value (a null one, or no key column: the position, `<file without extension>/<row>` with
  the row zero-padded to 9 digits). A key that cannot name tar members is `bad_key`; repeats within a shard follow
  on_duplicate_key (across shards they are not checked, as for WebDataset).
- Image: the struct's bytes, or the plain column's; an Image struct holding only a path reads that file relative to
  the input folder (the root: outside it is `path_outside_root` unless allow_outside_root; a missing file is image
  null). Over max_image_bytes is `too_large`. The extension: the path's, else the bytes' magic (JPEG, PNG, WebP,
  GIF, BMP, TIFF), else the column's name when it is an image extension.
- Shards: one per Parquet row group (`FILE@00003`: row group 3), and fixed chunks of shard_size rows of an Arrow
  file (`FILE@00000`), in file order. Read in row batches with pyarrow (Arrow files memory-mapped): never a whole
  file of images in memory. A file that breaks mid-read gives its rows read so far, then one
  `shard_truncated`/`shard_unreadable` row (`__shard_error__`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    Batcher,
    Reader,
    check_byte_limit,
    check_flag,
    one_line,
)
from mmcurate.io.image_files import check_shard_size, split_ext
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, loads_untrusted, short_repr, sniff_image_ext
from mmcurate.io.table import CAPTION_COLUMNS, caption_column_note, meta_text, pick_column

#: Image column names tried first (the `datasets` convention, then img2dataset's per-format columns).
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
SAMPLE_KEY_COLUMNS = ("key", "__key__")
SHARD_ERROR_KEY = "__shard_error__"
# How many rows start_notes looks at.
NOTE_ROWS = 100


class _Unit(NamedTuple):
    """One shard: a Parquet row group, or rows [start, start + rows) of an Arrow file."""

    path: str
    kind: str  # "parquet" | "arrow"
    index: int  # row group (parquet) or chunk (arrow)
    start: int  # the first row's position in its file
    rows: int


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def is_image_type(t: pa.DataType) -> bool:
    """A plain binary column, or a struct with a binary `bytes` field (the `datasets` Image feature)."""
    if _is_binary(t):
        return True
    if pa.types.is_struct(t):
        idx = t.get_field_index("bytes")
        return idx >= 0 and _is_binary(t.field(idx).type)
    return False


def _holds_binary(t: pa.DataType) -> bool:
    if _is_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(_holds_binary(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_binary(t.value_type)
    return False


def image_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if is_image_type(f.type)]


def parquet_has_images(path: str) -> bool:
    """Whether a Parquet file has an image-bytes column (read from its footer only); ValueError if not Parquet."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"cannot read {path!r} as Parquet: {one_line(exc, 200)}") from None
    return bool(image_columns(schema))


def in_split(rel: str, split: str) -> bool:
    """Whether the file at relative path `rel` belongs to `split` (see the module docstring)."""
    *dirs, name = rel.split("/")
    return split in dirs or name.startswith((f"{split}-", f"{split}_", f"{split}.")) or name == split


def _open_arrow(source) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC stream (what `datasets` writes) or file."""
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        file_reader = pa.ipc.open_file(source)
        for i in range(file_reader.num_record_batches):
            yield file_reader.get_batch(i)
        return
    yield from reader


def _arrow_schema(path: str) -> pa.Schema:
    with pa.memory_map(path) as source:
        try:
            return pa.ipc.open_stream(source).schema
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).schema


def _arrow_rows(path: str) -> int:
    with pa.memory_map(path) as source:
        return sum(b.num_rows for b in _open_arrow(source))


class HfParquetReader(Reader):
    format = "hf"

    def __init__(
        self,
        path,
        *,
        image_column: str | None = None,
        caption_column: str | None = None,
        key_column: str | None = None,
        split: str | None = None,
        shard_size: int = 1000,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        allow_outside_root: bool = False,
    ):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"input {self.path!r} does not exist")
        self.root = self.path if os.path.isdir(self.path) else os.path.dirname(self.path) or "."
        self.split = split
        self.shard_size = check_shard_size(shard_size)
        KeyRegistry(on_duplicate_key, "")  # validates the policy
        self.on_duplicate_key = on_duplicate_key
        self.max_image_bytes = check_byte_limit("max_image_bytes", max_image_bytes)
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        files = self._find_files()
        schemas = {f: self._schema(f) for f in files}
        first = schemas[files[0]]
        where = f"{files[0]!r}"
        candidates = image_columns(first)
        if image_column is not None:
            if image_column not in first.names:
                raise ValueError(f"{where} has no image column {image_column!r}; columns: {', '.join(first.names)}")
            if image_column not in candidates:
                raise ValueError(
                    f"{where}: column {image_column!r} holds {first.field(image_column).type}, not image bytes "
                    f"(binary, or a struct {{bytes, path}}); for a table of image paths use format: table"
                )
        else:
            image_column = next((c for c in IMAGE_COLUMN_NAMES if c in candidates), None) or next(
                iter(candidates), None
            )
            if image_column is None:
                raise ValueError(
                    f"{where} has no image column (binary, or the datasets Image struct {{bytes, path}}); columns: "
                    f"{', '.join(first.names)}; for a table of image paths use format: table"
                )
        self.image_column = image_column
        self.caption_column = pick_column(
            first.names, caption_column, CAPTION_COLUMNS, "caption", where, required=False
        )
        self.key_column = pick_column(first.names, key_column, SAMPLE_KEY_COLUMNS, "key", where, required=False)
        for f, schema in schemas.items():
            for col in (self.image_column, self.caption_column, self.key_column):
                if col is not None and col not in schema.names:
                    raise ValueError(
                        f"{f!r} has no column {col!r} (the first file has); columns: {', '.join(schema.names)}"
                    )
        self._binary_columns = sorted(
            {f.name for s in schemas.values() for f in s if _holds_binary(f.type)} - {self.image_column}
        )
        self._first_names = first.names
        self._units = self._list_units(files)

    # -- listing ---------------------------------------------------------------------------------------
    def _find_files(self) -> list[str]:
        p = self.path
        if os.path.isfile(p):
            if not p.lower().endswith((".parquet", ".arrow")):
                raise ValueError(f"{p!r}: format hf reads .parquet or .arrow files, or a folder of them")
            files = [p]
        elif not os.path.isdir(p):
            raise ValueError(f"input {p!r} is not a regular file or a directory")
        elif os.path.isfile(os.path.join(p, "dataset_dict.json")):
            files = []
            for split in self._dict_splits(p):
                files.extend(self._saved_files(os.path.join(p, split)))
        elif os.path.isfile(os.path.join(p, "state.json")):
            files = self._saved_files(p)
        else:
            files = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(
                    os.path.join(dirpath, n)
                    for n in filenames
                    if n.lower().endswith(".parquet")
                    and not n.startswith(".")
                    and os.path.isfile(os.path.join(dirpath, n))
                )
            files.sort()
        if self.split is not None:
            kept = [f for f in files if in_split(self._rel(f), self.split)]
            if not kept:
                raise ValueError(
                    f"no file of split {self.split!r} in {p!r} (files: "
                    f"{', '.join(self._rel(f) for f in files[:10]) or '(none)'}); set input.options.split"
                )
            files = kept
        if not files:
            raise FileNotFoundError(f"no .parquet or .arrow files in {p!r}")
        return files

    def _rel(self, f: str) -> str:
        return os.path.relpath(f, self.root).replace(os.sep, "/")

    def _dict_splits(self, folder: str) -> list[str]:
        try:
            info = loads_untrusted(paths.read_bounded(os.path.join(folder, "dataset_dict.json"), 1 << 20).decode())
            splits = info["splits"]
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{folder!r}: unreadable dataset_dict.json ({one_line(exc, 200)})") from None
        if not isinstance(splits, list) or not all(isinstance(s, str) and s and "/" not in s for s in splits):
            raise ValueError(f"{folder!r}: dataset_dict.json 'splits' is not a list of names")
        return [s for s in splits if s not in (".", "..") and os.path.isdir(os.path.join(folder, s))]

    def _saved_files(self, folder: str) -> list[str]:
        """A save_to_disk folder's Arrow files: state.json's `_data_files`, else data-*.arrow."""
        names: list[str] = []
        try:
            state = loads_untrusted(paths.read_bounded(os.path.join(folder, "state.json"), 1 << 20).decode())
            names = [d["filename"] for d in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            names = []
        names = [
            n
            for n in names
            if isinstance(n, str)
            and "/" not in n
            and "\\" not in n
            and n not in (".", "..")
            and os.path.isfile(os.path.join(folder, n))
        ]
        if not names:
            names = sorted(n for n in os.listdir(folder) if n.startswith("data-") and n.endswith(".arrow"))
        return [os.path.join(folder, n) for n in names]

    def _schema(self, f: str) -> pa.Schema:
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(f) if f.lower().endswith(".parquet") else _arrow_schema(f)
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"cannot read {f!r}: {one_line(exc, 200)}; remove or repair it") from None

    def _list_units(self, files: list[str]) -> dict[str, _Unit]:
        import pyarrow.parquet as pq

        units: dict[str, _Unit] = {}
        for f in files:
            try:
                if f.lower().endswith(".parquet"):
                    meta = pq.read_metadata(f)
                    counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
                    kind = "parquet"
                else:
                    total = _arrow_rows(f)
                    counts = [min(self.shard_size, total - s) for s in range(0, total, self.shard_size)]
                    kind = "arrow"
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(f"cannot read {f!r}: {one_line(exc, 200)}; remove or repair it") from None
            width = max(5, len(str(max(len(counts) - 1, 0))))
            start = 0
            for i, n in enumerate(counts):
                units[f"{f}@{i:0{width}d}"] = _Unit(f, kind, i, start, n)
                start += n
        return units

    def shards(self) -> list[str]:
        return list(self._units)

    def _unit(self, shard: str) -> _Unit:
        unit = self._units.get(shard)
        if unit is None:
            raise ValueError(f"unknown shard {shard!r} for {self.path!r} ({len(self._units)} shards)")
        return unit

    def count(self, shard: str) -> int | None:
        return self._unit(shard).rows

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "shards": len(self._units),
            "samples": sum(u.rows for u in self._units.values()),
            "options": {
                "image_column": self.image_column,
                "caption_column": self.caption_column,
                "key_column": self.key_column,
                "split": self.split,
                "shard_size": self.shard_size,
                "on_duplicate_key": self.on_duplicate_key,
                "max_image_bytes": self.max_image_bytes,
                "allow_outside_root": self.allow_outside_root,
            },
        }

    def start_notes(self) -> list[str]:
        notes = []
        if self.caption_column is None:
            notes.append(caption_column_note(f"{self.path!r}", self._first_names))
        notes.extend(self._path_only_note())
        if self._binary_columns:
            notes.append(
                f"{self.path!r}: the binary columns {', '.join(self._binary_columns)} are left out of meta; "
                f"the images are read from {self.image_column!r} (set input.options.image_column to choose)"
            )
        return notes

    def _path_only_note(self) -> list[str]:
        """A note when the first rows' Image values hold a path instead of bytes and the paths are not readable."""
        unit = next(iter(self._units.values()), None)
        if unit is None:
            return []
        try:
            batch = next(self._batches(unit, NOTE_ROWS, only=[self.image_column]), None)
        except Exception:  # noqa: BLE001 - a damaged file: the read says so, row by row
            return []
        values = batch.column(0).to_pylist() if batch is not None else []
        path_only = [v["path"] for v in values if isinstance(v, dict) and v.get("bytes") is None and v.get("path")]
        if not path_only:
            return []
        root_real = os.path.realpath(self.root)
        outside = [p for p in path_only if not paths.is_inside(os.path.realpath(os.path.join(root_real, p)), root_real)]
        missing = [p for p in path_only if not os.path.exists(os.path.join(root_real, p))]
        if outside and not self.allow_outside_root:
            return [
                f"{len(outside)} of the first {len(values)} images in {self.path!r} are paths outside the input "
                f"folder, not bytes (e.g. {short_repr(outside[0])}): they will be rejected as path_outside_root; set "
                f"input.options.allow_outside_root: true to read them, or save the dataset with its images embedded"
            ]
        if missing:
            return [
                f"{len(missing)} of the first {len(values)} images in {self.path!r} are paths, not bytes, and not "
                f"found under {self.root!r} (e.g. {short_repr(missing[0])}): they will be rejected as missing_image"
            ]
        return []

    # -- reading ---------------------------------------------------------------------------------------
    def _batches(self, unit: _Unit, batch_size: int, only: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The unit's rows in batches: every column but the other binary ones, or the columns `only`."""
        if unit.kind == "parquet":
            import pyarrow.parquet as pq

            with paths.open_binary(unit.path) as f:
                pf = pq.ParquetFile(f)
                columns = only or [n for n in pf.schema_arrow.names if n not in self._binary_columns]
                yield from pf.iter_batches(batch_size=batch_size, row_groups=[unit.index], columns=columns)
            return
        start, stop = unit.start, unit.start + unit.rows
        with pa.memory_map(unit.path) as source:
            offset = 0
            for rb in _open_arrow(source):
                lo, hi = max(start, offset), min(stop, offset + rb.num_rows)
                for s in range(lo, hi, batch_size):
                    piece = rb.slice(s - offset, min(batch_size, hi - s))
                    if only is not None:
                        yield piece.select(only)
                    else:
                        yield piece.drop_columns([n for n in self._binary_columns if n in piece.schema.names])
                offset += rb.num_rows
                if offset >= stop:
                    break

    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        unit = self._unit(shard)
        batcher = Batcher(batch_size, max_batch_bytes)
        keys = KeyRegistry(self.on_duplicate_key, f"shard {shard!r}")
        root_real = os.path.realpath(self.root)
        stem = self._rel(unit.path).rsplit(".", 1)[0]
        batches = self._batches(unit, batch_size)
        row = unit.start
        while True:
            try:
                rb = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - a damaged file: what came before is whole
                n = row - unit.start
                reason = "shard_truncated" if n else "shard_unreadable"
                detail = f"shard {shard!r}: unreadable after {n} rows: {type(exc).__name__}: {exc}"
                batch = batcher.add_reject(keys.substitute(SHARD_ERROR_KEY), shard, reason, detail)
                if batch is not None:
                    yield batch
                break
            yield from self._rows(batcher, keys, shard, root_real, stem, row, rb)
            row += rb.num_rows
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def _rows(self, batcher, keys, shard, root_real, stem, first_row, rb: pa.RecordBatch) -> Iterator[pa.Table]:
        n = rb.num_rows
        names = rb.schema.names
        images = rb.column(names.index(self.image_column)).to_pylist()
        captions = rb.column(names.index(self.caption_column)).to_pylist() if self.caption_column else [None] * n
        ids = rb.column(names.index(self.key_column)).to_pylist() if self.key_column else [None] * n
        own = {self.image_column, self.caption_column, self.key_column}
        others = rb.select([c for c in names if c not in own]).to_pylist()
        for j in range(n):
            batch = self._row(
                batcher, keys, shard, root_real, stem, first_row + j, images[j], captions[j], ids[j], others[j]
            )
            if batch is not None:
                yield batch

    def _row(self, batcher, keys, shard, root_real, stem, row, value, caption, key_value, other) -> pa.Table | None:
        position = f"{stem}/{row:09d}"
        raw_key = position if key_value is None else str(key_value)
        key, reason, detail = keys.claim_or_reject(raw_key, f"row {row} of {short_repr(stem)}")
        if reason is not None:
            return batcher.add_reject(key, shard, reason, detail)
        data, image_path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
        if isinstance(image_path, str) and image_path == "":
            image_path = None
        if data is None and image_path is not None:
            data, reason, detail = paths.read_inside_root(
                root_real, image_path, self.max_image_bytes, self.allow_outside_root
            )
            if reason is not None:
                return batcher.add_reject(key, shard, reason, f"row {row}: image {detail}")
        elif data is not None and len(data) > self.max_image_bytes:
            detail = f"row {row}: image is {len(data):,} bytes (limit max_image_bytes={self.max_image_bytes:,})"
            return batcher.add_reject(key, shard, "too_large", detail)
        ext = split_ext(image_path)[1] if isinstance(image_path, str) else None
        if ext is None and data is not None:
            ext = sniff_image_ext(data)
        if ext is None and self.image_column.lower() in IMAGE_EXTS:
            ext = self.image_column.lower()
        if image_path is not None and "image_path" not in other:
            other = {**other, "image_path": image_path}
        meta, reason, detail = meta_text(other, f"row {row}")
        if reason is not None:
            return batcher.add_reject(key, shard, reason, detail, ext)
        return batcher.add(key, shard, data, ext, None if caption is None else str(caption), meta)
