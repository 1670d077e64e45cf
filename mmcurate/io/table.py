"""Tables of image paths and captions (JSONL, a JSON list, CSV/TSV, Parquet): the column rules every reader
shares, and the list-file reader (format `table`).

Columns, when not given, are picked by name: the first present, in this order.
- image path (option `key_column`): IMAGE_PATH_COLUMNS.
- caption (option `caption_column`): CAPTION_COLUMNS. A table without any of them is read with captions null,
  and `start_notes` says so, naming caption_column.
A column given by option that is not in the table is an error listing the table's columns. The row's other
non-null columns become the sample's meta (a JSON object; NaN and infinite numbers are left out like nulls).

The list file (TableReader): one sample per row. The image path is relative to the file's directory, or to the
`image_root` option; that directory is the input root: a path that resolves outside it is `path_outside_root`
(allow_outside_root lifts this). The key is the path relative to the root without its image extension
(`cats/001.jpg` -> `cats/001`; `a/../b.jpg` -> `b`); with allow_outside_root, a path outside the root is keyed by
its absolute path without the leading '/'. A row without a path is a sample with image null, keyed `row_<N>`
(the only key tied to position). A path that is not on disk gives image null (the integrity stage rejects it).
A path without an image extension takes the one its bytes' magic says. Repeated paths follow on_duplicate_key.
Shards are fixed chunks of the rows in file order: `FILE@00000` covers rows [0, shard_size).
"""

from __future__ import annotations

import json
import math
import os
import posixpath

from mmcurate.io import paths
from mmcurate.io.base import DEFAULT_MAX_IMAGE_BYTES
from mmcurate.io.image_files import Entry, ImageFileReader, normalize_rel, outside_root, split_ext
from mmcurate.io.keys import IMAGE_EXTS, json_problem, short_repr
from mmcurate.io.parquet_io import read_columns

#: Image-path column names, in the order tried: Hugging Face ImageFolder's metadata file, the common short names,
#: open_clip's CSV default (`filepath`), then the rarer spellings.
IMAGE_PATH_COLUMNS = ("file_name", "image", "path", "image_path", "filepath", "filename", "file", "img", "image_file")

#: Caption column names, in the order tried: the generic ones first (`caption`, `text`), LAION's parquet (`TEXT`),
#: then what other datasets call it (TextCaps `caption_text`, Flickr/RefCOCO `sentence`, `description`,
#: text-to-image sets' `prompt`, Conceptual Captions/WIT `alt_text`, `alt`), and open_clip's CSV default `title`.
CAPTION_COLUMNS = (
    "caption",
    "text",
    "TEXT",
    "caption_text",
    "sentence",
    "description",
    "prompt",
    "alt_text",
    "alt",
    "title",
)

TABLE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")

# How many rows start_notes checks on disk.
NOTE_ROWS = 100


def pick_column(names, given: str | None, defaults, what: str, where: str, *, required: bool = True) -> str | None:
    """The column to use: `given` (an error naming the columns when absent), else the first of `defaults` present;
    None when none is and not `required` (else an error naming the option `<what>_column`)."""
    names = list(names)
    if given is not None:
        if given not in names:
            raise ValueError(f"{where} has no {what} column {given!r}; columns: {', '.join(names) or '(none)'}")
        return given
    found = next((c for c in defaults if c in names), None)
    if found is None and required:
        raise ValueError(
            f"{where}: no {what} column among {', '.join(defaults)}; columns: {', '.join(names) or '(none)'}; "
            f"set {what}_column: NAME"
        )
    return found


def caption_column_note(where: str, names, option_prefix: str = "input.options.") -> str:
    return (
        f"{where} has no caption column (none of {', '.join(CAPTION_COLUMNS)}; columns: "
        f"{', '.join(names) or '(none)'}): captions will be null; set {option_prefix}caption_column: NAME"
    )


def meta_text(values: dict, where: str) -> tuple[str, str | None, str | None]:
    """(meta JSON-object text, reject reason, detail) of a row's other columns: nulls, NaN and infinities left
    out; nested deeper than keys.MAX_META_DEPTH is `bad_meta`."""
    extra = {
        k: v
        for k, v in values.items()
        if v is not None and not (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))
    }
    problem = json_problem(extra)
    if problem:
        return "{}", "bad_meta", f"{where}: {problem}"
    return json.dumps(extra, ensure_ascii=False, default=str), None, None


def read_table_columns(path: str) -> dict[str, list]:
    """A table file as {column: values}: parquet_io.read_columns, plus a JSON list of objects (`.json`)."""
    if not path.lower().endswith(".json"):
        return read_columns(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deep to parse") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    columns: dict[str, list] = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: entry {i} is a {type(row).__name__}, not an object")
        for name in row:
            if name not in columns:
                columns[name] = [None] * i
        for name, values in columns.items():
            values.append(row.get(name))
    return columns


class CaptionTable:
    """A table of image paths and captions, its columns picked (see the module docstring)."""

    def __init__(self, path: str, key_column: str | None, caption_column: str | None, what: str = "caption file"):
        self.path = path
        if not os.path.isfile(path):
            if os.path.exists(path):  # a FIFO or device: reading it could block or never end
                raise ValueError(f"{what} {path!r} is not a regular file")
            raise FileNotFoundError(f"{what} {path!r} does not exist")
        if not path.lower().endswith(TABLE_SUFFIXES):
            raise ValueError(f"{what} {path!r}: unsupported extension; use .jsonl, .json, .csv, .tsv or .parquet")
        self.where = f"{what} {path!r}"
        self.columns = read_table_columns(path)
        self.key_column = pick_column(self.columns, key_column, IMAGE_PATH_COLUMNS, "key", self.where)
        self.caption_column = pick_column(
            self.columns, caption_column, CAPTION_COLUMNS, "caption", self.where, required=False
        )
        self.n_rows = len(self.columns[self.key_column]) if self.columns else 0

    def paths(self) -> list:
        return self.columns[self.key_column]

    def caption_and_meta(self, row: int | None) -> tuple[str | None, str, str | None, str | None]:
        """(caption, meta, reject reason, detail) of a row (None: no row, caption null and meta {})."""
        if row is None:
            return None, "{}", None, None
        caption = self.columns[self.caption_column][row] if self.caption_column else None
        others = {
            name: values[row]
            for name, values in self.columns.items()
            if name not in (self.key_column, self.caption_column)
        }
        meta, reason, detail = meta_text(others, f"{self.where} row {row}")
        if reason is not None:
            return None, "{}", reason, detail
        return (None if caption is None else str(caption)), meta, None, None

    def notes(self) -> list[str]:
        if self.caption_column is None and self.n_rows:
            return [caption_column_note(self.where, self.columns)]
        return []


class TableReader(ImageFileReader):
    """A list file: a JSONL/JSON/CSV/TSV/Parquet table of image paths and captions (see the module docstring)."""

    format = "table"
    what = "list file"
    _CACHE_ATTRS = ("_entries", "_table")

    def __init__(
        self,
        path,
        *,
        image_root: str | os.PathLike | None = None,
        key_column: str | None = None,
        caption_column: str | None = None,
        shard_size: int = 1000,
        image_exts: tuple[str, ...] = IMAGE_EXTS,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        allow_outside_root: bool = False,
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            if os.path.exists(self.path):
                raise ValueError(f"list file {self.path!r} is not a regular file")
            raise FileNotFoundError(f"list file {self.path!r} does not exist")
        root = os.fspath(image_root) if image_root is not None else os.path.dirname(self.path) or "."
        if image_root is not None and not os.path.isdir(root):
            raise FileNotFoundError(f"image_root {root!r} is not a directory")
        self._init_files(
            self.path,
            root,
            shard_size=shard_size,
            on_duplicate_key=on_duplicate_key,
            max_image_bytes=max_image_bytes,
            allow_outside_root=allow_outside_root,
        )
        self.key_column = key_column
        self.caption_column = caption_column
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self._table: CaptionTable | None = None
        self.entries()  # read now: errors surface when the reader is opened, not mid-run

    def _load(self) -> CaptionTable:
        if self._table is None:
            self._table = CaptionTable(self.path, self.key_column, self.caption_column, "list file")
            self.key_column, self.caption_column = self._table.key_column, self._table.caption_column
        return self._table

    def _list(self) -> list[Entry]:
        table = self._load()
        keys = self._keys()
        root_abs = os.path.abspath(self.root)
        root_real = os.path.realpath(self.root)
        entries = []
        for row, value in enumerate(table.paths()):
            if value is None or str(value).strip() == "":
                entries.append(Entry(keys.substitute(f"row_{row}"), None, None, row))
                continue
            read_path, key_path = self._key_path(str(value), root_abs)
            stem, ext = split_ext(key_path if key_path is not None else read_path, self.image_exts)
            if key_path is None:  # outside the root, never read
                detail = outside_root(root_real, read_path) or f"{short_repr(read_path)} is outside the input root"
                key = keys.substitute(f"__outside_root__{row}")
                entries.append(Entry(key, None, ext, row, "path_outside_root", f"row {row}: {detail}"))
                continue
            key, reason, detail = keys.claim_or_reject(stem, f"row {row}")
            entries.append(Entry(key, None if reason else read_path, ext, row, reason, detail))
        return entries

    def _key_path(self, text: str, root_abs: str) -> tuple[str, str | None]:
        """(the path to read, relative to the root or absolute; the key's path, or None when it lies outside the
        root and that is not allowed)."""
        text = text.replace("\\", "/") if os.sep == "/" else text
        if os.path.isabs(text):
            absolute = os.path.abspath(text)
            if paths.is_inside(absolute, root_abs):
                return text, os.path.relpath(absolute, root_abs).replace(os.sep, "/")
            return text, (absolute.lstrip("/") if self.allow_outside_root else None)
        rel = normalize_rel(text)
        norm = posixpath.normpath(rel)
        if norm == ".." or norm.startswith("../"):
            if not self.allow_outside_root:
                return rel, None
            return rel, os.path.abspath(os.path.join(root_abs, rel)).lstrip("/")
        return rel, norm

    def _text(self, root_real: str, entry: Entry):
        return self._load().caption_and_meta(entry.row)

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "shards": len(self.shards()),
            "samples": len(self.entries()),
            "options": {
                "image_root": self.root,
                "key_column": self.key_column,
                "caption_column": self.caption_column,
                "image_exts": list(self.image_exts),
                **self._file_options(),
            },
        }

    def start_notes(self) -> list[str]:
        table = self._load()
        notes = table.notes()
        if not table.n_rows:
            notes.append(f"list file {self.path!r} has no rows")
        notes.extend(missing_images_note(self.root, self.entries(), f"rows of list file {self.path!r}", "image_root"))
        return notes


def missing_images_note(root: str, entries, what: str, option: str, limit: int = NOTE_ROWS) -> list[str]:
    """A note when some of the first `limit` listed images are not on disk under `root`, naming the option."""
    checked = [e for e in entries[: limit * 4] if e.rel_path is not None and e.reason is None][:limit]
    missing = [e.rel_path for e in checked if not os.path.lexists(os.path.join(root, e.rel_path))]
    if not missing:
        return []
    return [
        f"{len(missing)} of the first {len(checked)} {what} name images not found under {root!r} "
        f"(e.g. {short_repr(missing[0])}): they will be rejected as missing_image; set input.options.{option} "
        f"to the folder the paths are relative to"
    ]
