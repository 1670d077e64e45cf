"""An image folder with captions: images anywhere under a root, captions from a table or sidecar files.

- Images: every file under `root` (recursive, hidden files and directories skipped) whose extension is
  in IMAGE_EXTS, case-insensitive. A sample's key is its relative POSIX path without the extension
  (`cats/001.jpg` -> `cats/001`), which is also its WebDataset key when written out.
- Captions, in this order of precedence:
  1. `captions=PATH`: a JSONL, CSV/TSV or Parquet table. `key_column` (default: the first of
     file_name, image, path) holds the image's path relative to root, with or without its extension;
     `caption_column` (default: the first of caption, text) the caption. The other non-null columns
     become the sample's meta JSON. A listed image that is not on disk is still a row, with image null
     (the integrity stage rejects it), so nothing listed is silently lost; an image on disk that is not
     listed gets caption null.
  2. `metadata.jsonl|csv|parquet` in root (Hugging Face ImageFolder's convention), read as in 1.
  3. Sidecar files next to each image: `KEY.txt` (caption) and `KEY.json` (meta), the layout of
     img2dataset's "files" output.
- Shards are fixed chunks of the samples sorted by key: `ROOT@00000` covers samples [0, shard_size).
- Duplicate keys (`a.jpg` and `a.png`, or one image listed twice in the caption table, e.g. two captions
  of one COCO image) raise DuplicateKeyError, or with on_duplicate_key="suffix" become `a~1`, ...
- Only files inside root are read. Symlinked directories are not descended into; a symlinked image or
  sidecar that resolves outside root is a `path_outside_root` reject (`allow_outside_root=True` reads it).
  A listed name that is not a regular file (a FIFO, a device, a directory named `x.jpg`) is `not_a_file`,
  checked before opening; an image over max_image_bytes or a sidecar over max_member_bytes is `too_large`
  (never read past the limit); a file name or caption-table key that cannot be a key (control characters,
  `..`) is `bad_key`; a sidecar `.json` or table row nested deeper than keys.MAX_META_DEPTH is `bad_meta`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_MEMBER_BYTES,
    Batcher,
    Reader,
    check_byte_limit,
    check_flag,
)
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, check_meta, json_problem
from mmcurate.io.parquet_io import read_columns

KEY_COLUMNS = ("file_name", "image", "path")
CAPTION_COLUMNS = ("caption", "text")
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


@dataclass(frozen=True)
class _Entry:
    key: str
    rel_path: str | None  # image path relative to root; None when a caption row names no file on disk
    image_ext: str | None
    row: int | None  # caption-table row, if any
    reason: str | None = None  # set for a sample known unreadable at listing time (bad_key)
    detail: str | None = None


def _split_ext(rel: str, image_exts) -> tuple[str, str | None]:
    stem, dot, ext = rel.rpartition(".")
    if dot and "/" not in ext and ext.lower() in image_exts and stem and not stem.endswith("/"):
        return stem, ext.lower()
    return rel, None


def _normalize_rel(value) -> str:
    rel = str(value).replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel.strip("/")


class FolderReader(Reader):
    format = "folder"
    _CACHE_ATTRS = ("_entries", "_table")

    def __init__(
        self,
        path,
        *,
        captions: str | os.PathLike | None = None,
        key_column: str | None = None,
        caption_column: str | None = None,
        shard_size: int = 1000,
        image_exts: tuple[str, ...] = IMAGE_EXTS,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        allow_outside_root: bool = False,
    ):
        self.root = os.fspath(path)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder {self.root!r} does not exist or is not a directory")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        if captions is None:
            captions = next(
                (os.path.join(self.root, n) for n in METADATA_FILES if os.path.isfile(os.path.join(self.root, n))), None
            )
        elif not os.path.isfile(captions):
            if os.path.exists(captions):  # a FIFO or device: reading it could block or never end
                raise ValueError(f"caption file {os.fspath(captions)!r} is not a regular file")
            raise FileNotFoundError(f"caption file {os.fspath(captions)!r} does not exist")
        self.captions = os.fspath(captions) if captions is not None else None
        self.key_column = key_column
        self.caption_column = caption_column
        self.shard_size = shard_size
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        KeyRegistry(on_duplicate_key, "")  # validates the policy
        self.on_duplicate_key = on_duplicate_key
        self.max_image_bytes = check_byte_limit("max_image_bytes", max_image_bytes)
        self.max_member_bytes = check_byte_limit("max_member_bytes", max_member_bytes)
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self._entries: list[_Entry] | None = None
        self._table: dict[str, list] | None = None
        self._entries_and_table()  # list now: errors surface when the reader is opened, not mid-run

    # -- listing -------------------------------------------------------------------------------------
    def _entries_and_table(self) -> tuple[list[_Entry], dict[str, list] | None]:
        if self._entries is None:
            self._table = self._load_table() if self.captions else None
            self._entries = self._build_entries(self._table)
        return self._entries, self._table

    def _load_table(self) -> dict[str, list]:
        table = read_columns(self.captions)
        names = list(table)

        def pick(given, defaults, what):
            if given is not None:
                if given not in table:
                    raise ValueError(
                        f"caption file {self.captions!r} has no {what} column {given!r}; "
                        f"columns: {', '.join(names) or '(none)'}"
                    )
                return given
            found = next((c for c in defaults if c in table), None)
            if found is None:
                raise ValueError(
                    f"caption file {self.captions!r}: no {what} column among {list(defaults)}; "
                    f"columns: {', '.join(names) or '(none)'}; pass {what}_column=..."
                )
            return found

        self.key_column = pick(self.key_column, KEY_COLUMNS, "key")
        self.caption_column = pick(self.caption_column, CAPTION_COLUMNS, "caption")
        return table

    def _list_images(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                if name.startswith(".") or _split_ext(name, self.image_exts)[1] is None:
                    continue
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
        return sorted(out)

    def _build_entries(self, table) -> list[_Entry]:
        keys = KeyRegistry(self.on_duplicate_key, f"image folder {self.root!r}")
        by_key: dict[str, _Entry] = {}
        key_of_file: dict[str, str] = {}
        for rel in self._list_images():
            stem, ext = _split_ext(rel, self.image_exts)
            key, reason, detail = keys.claim_or_reject(stem, f"file {rel!r}")
            if reason is not None:  # a name the output cannot carry: a reject, never read
                by_key[key] = _Entry(key, None, ext, None, reason, detail)
                continue
            by_key[key] = _Entry(key, rel, ext, None)
            key_of_file[rel] = key
        if table is None:
            return sorted(by_key.values(), key=lambda e: e.key)
        for row, value in enumerate(table[self.key_column]):
            if value is None:
                raise ValueError(f"caption file {self.captions!r}: row {row} has no {self.key_column!r}")
            rel = _normalize_rel(value)
            stem, ext = _split_ext(rel, self.image_exts)
            # "cats/001.jpg" names that file; "cats/001" names the image whose key it is.
            target = (
                key_of_file.get(rel)
                if ext is not None
                else (stem if stem in by_key and by_key[stem].rel_path is not None else None)
            )
            if target is not None and by_key[target].row is None:
                by_key[target] = _Entry(target, by_key[target].rel_path, by_key[target].image_ext, row)
                continue
            # A second caption row for an image, or a row naming a file that is not on disk.
            key, reason, detail = keys.claim_or_reject(stem, f"caption row {row}")
            if reason is not None:
                by_key[key] = _Entry(key, None, ext, row, reason, detail)
            elif target is not None:
                by_key[key] = _Entry(key, by_key[target].rel_path, by_key[target].image_ext, row)
            else:
                by_key[key] = _Entry(key, None, ext, row)
        return sorted(by_key.values(), key=lambda e: e.key)

    def _shard_width(self, n_entries: int) -> int:
        n_shards = max(1, -(-n_entries // self.shard_size))
        return max(5, len(str(n_shards - 1)))

    def shards(self) -> list[str]:
        entries, _ = self._entries_and_table()
        n_shards = -(-len(entries) // self.shard_size)
        width = self._shard_width(len(entries))
        return [f"{self.root}@{i:0{width}d}" for i in range(n_shards)]

    def _shard_range(self, shard: str) -> tuple[int, int]:
        entries, _ = self._entries_and_table()
        root, at, index = shard.rpartition("@")
        if not at or root != self.root or not index.isdigit() or int(index) * self.shard_size >= len(entries):
            raise ValueError(f"unknown shard {shard!r} for image folder {self.root!r} ({len(self.shards())} shards)")
        start = int(index) * self.shard_size
        return start, min(start + self.shard_size, len(entries))

    def count(self, shard: str) -> int | None:
        start, stop = self._shard_range(shard)
        return stop - start

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.root,
            "shards": len(self.shards()),
            "samples": len(self._entries_and_table()[0]),
            "options": {
                "captions": self.captions,
                "key_column": self.key_column,
                "caption_column": self.caption_column,
                "shard_size": self.shard_size,
                "image_exts": list(self.image_exts),
                "on_duplicate_key": self.on_duplicate_key,
                "max_image_bytes": self.max_image_bytes,
                "max_member_bytes": self.max_member_bytes,
                "allow_outside_root": self.allow_outside_root,
            },
        }

    # -- reading -------------------------------------------------------------------------------------
    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        start, stop = self._shard_range(shard)
        entries, table = self._entries_and_table()
        batcher = Batcher(batch_size, max_batch_bytes)
        root_real = os.path.realpath(self.root)
        for entry in entries[start:stop]:
            batch = self._row(batcher, shard, root_real, entry, table)
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def _row(self, batcher: Batcher, shard: str, root_real: str, entry: _Entry, table) -> pa.Table | None:
        if entry.reason is not None:
            return batcher.add_reject(entry.key, shard, entry.reason, entry.detail, entry.image_ext)
        image = None
        if entry.rel_path is not None:
            image, reason, detail = self._read_file(root_real, entry.rel_path, self.max_image_bytes)
            if reason is not None:
                return batcher.add_reject(entry.key, shard, reason, detail, entry.image_ext)
        if table is not None:
            caption, meta, reason, detail = self._caption_row(table, entry.row)
        else:
            caption, meta, reason, detail = self._sidecars(root_real, entry)
        if reason is not None:
            return batcher.add_reject(entry.key, shard, reason, detail, entry.image_ext)
        return batcher.add(entry.key, shard, image, entry.image_ext, caption, meta)

    def _read_file(self, root_real: str, rel: str, max_bytes: int, limit_name: str = "max_image_bytes"):
        """(bytes or None when missing: deleted since the listing, like an unlisted image; reason; detail)."""
        return paths.read_inside_root(root_real, rel, max_bytes, self.allow_outside_root, limit_name)

    def _caption_row(self, table, row: int | None) -> tuple[str | None, str, str | None, str | None]:
        if row is None:
            return None, "{}", None, None
        caption = table[self.caption_column][row]
        extra = {
            name: values[row]
            for name, values in table.items()
            if name not in (self.key_column, self.caption_column) and values[row] is not None
        }
        problem = json_problem(extra)
        if problem:
            return None, "{}", "bad_meta", f"caption file row {row}: {problem}"
        return (
            (None if caption is None else str(caption)),
            json.dumps(extra, ensure_ascii=False, default=str),
            None,
            None,
        )

    def _sidecars(self, root_real: str, entry: _Entry) -> tuple[str | None, str, str | None, str | None]:
        if entry.rel_path is None:
            return None, "{}", None, None
        stem = _split_ext(entry.rel_path, self.image_exts)[0]
        texts = []
        for ext in ("txt", "json"):
            data, reason, detail = self._read_file(
                root_real, f"{stem}.{ext}", self.max_member_bytes, "max_member_bytes"
            )
            if reason is not None:
                return None, "{}", reason, detail
            texts.append(data.decode("utf-8", errors="replace") if data is not None else None)
        meta, reason, detail = check_meta(texts[1])
        if reason is not None:
            return None, "{}", reason, f"{stem}.json: {detail}"
        return texts[0], meta, None, None
