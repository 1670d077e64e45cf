"""An image folder with captions: images anywhere under a root, captions from a table or sidecar files.

- Images: every file under `root` (recursive, hidden files and directories skipped) whose extension is
  in IMAGE_EXTS, case-insensitive. A sample's key is its relative POSIX path without the extension
  (`cats/001.jpg` -> `cats/001`), which is also its WebDataset key when written out.
- Captions, in this order of precedence:
  1. `captions=PATH`: a JSONL, JSON, CSV/TSV or Parquet table. `key_column` (default: the first of
     table.IMAGE_PATH_COLUMNS: file_name, image, path, ...) holds the image's path relative to root, with or
     without its extension; `caption_column` (default: the first of table.CAPTION_COLUMNS: caption, text,
     TEXT, ...) the caption. The other non-null columns become the sample's meta JSON. A listed image that is
     not on disk is still a row, with image null (the integrity stage rejects it), so nothing listed is
     silently lost; an image on disk that is not listed gets caption null.
  2. The first of CAPTION_FILES found in root: `metadata.jsonl|csv|parquet` (Hugging Face ImageFolder's
     convention), then `captions.jsonl|csv|tsv|parquet`, read as in 1.
  3. Sidecar files next to each image: `KEY.txt` (caption) and `KEY.json` (meta), the layout of
     img2dataset's "files" output.
- Shards are fixed chunks of the samples sorted by key: `ROOT@00000` covers samples [0, shard_size)
  (image_files.ImageFileReader, which the list-file and COCO readers share).
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

import glob
import os

from mmcurate.io.base import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_MEMBER_BYTES, check_byte_limit
from mmcurate.io.image_files import Entry, ImageFileReader, normalize_rel, split_ext
from mmcurate.io.keys import IMAGE_EXTS, check_meta
from mmcurate.io.table import IMAGE_PATH_COLUMNS, CaptionTable

#: Caption tables found in the root without the `captions` option, in this order (the first found is read).
CAPTION_FILES = (
    "metadata.jsonl",
    "metadata.csv",
    "metadata.parquet",
    "captions.jsonl",
    "captions.csv",
    "captions.tsv",
    "captions.parquet",
)
KEY_COLUMNS = IMAGE_PATH_COLUMNS


class FolderReader(ImageFileReader):
    format = "folder"
    what = "image folder"
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
        root = os.fspath(path)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
        self._init_files(
            root,
            root,
            shard_size=shard_size,
            on_duplicate_key=on_duplicate_key,
            max_image_bytes=max_image_bytes,
            allow_outside_root=allow_outside_root,
        )
        found = [os.path.join(root, n) for n in CAPTION_FILES if os.path.isfile(os.path.join(root, n))]
        self._other_caption_files = found[1:] if captions is None else []
        if captions is None:
            captions = found[0] if found else None
        elif not os.path.isfile(captions):
            if os.path.exists(captions):  # a FIFO or device: reading it could block or never end
                raise ValueError(f"caption file {os.fspath(captions)!r} is not a regular file")
            raise FileNotFoundError(f"caption file {os.fspath(captions)!r} does not exist")
        self.captions = os.fspath(captions) if captions is not None else None
        self.key_column = key_column
        self.caption_column = caption_column
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        self.max_member_bytes = check_byte_limit("max_member_bytes", max_member_bytes)
        self._table: CaptionTable | None = None
        self._n_images = self._n_txt = 0
        self.entries()  # list now: errors surface when the reader is opened, not mid-run

    # -- listing -------------------------------------------------------------------------------------
    def _load_table(self) -> CaptionTable | None:
        if self._table is None and self.captions is not None:
            self._table = CaptionTable(self.captions, self.key_column, self.caption_column)
            self.key_column, self.caption_column = self._table.key_column, self._table.caption_column
        return self._table

    def _list_images(self) -> list[str]:
        out = []
        n_txt = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                if name.startswith("."):
                    continue
                if split_ext(name, self.image_exts)[1] is None:
                    n_txt += name.lower().endswith(".txt")
                    continue
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
        self._n_images, self._n_txt = len(out), n_txt
        return sorted(out)

    def _list(self) -> list[Entry]:
        table = self._load_table()
        keys = self._keys()
        by_key: dict[str, Entry] = {}
        key_of_file: dict[str, str] = {}
        for rel in self._list_images():
            stem, ext = split_ext(rel, self.image_exts)
            key, reason, detail = keys.claim_or_reject(stem, f"file {rel!r}")
            if reason is not None:  # a name the output cannot carry: a reject, never read
                by_key[key] = Entry(key, None, ext, None, reason, detail)
                continue
            by_key[key] = Entry(key, rel, ext, None)
            key_of_file[rel] = key
        if table is None:
            return sorted(by_key.values(), key=lambda e: e.key)
        for row, value in enumerate(table.paths()):
            if value is None:
                raise ValueError(f"caption file {self.captions!r}: row {row} has no {self.key_column!r}")
            rel = normalize_rel(value)
            stem, ext = split_ext(rel, self.image_exts)
            # "cats/001.jpg" names that file; "cats/001" names the image whose key it is.
            target = (
                key_of_file.get(rel)
                if ext is not None
                else (stem if stem in by_key and by_key[stem].rel_path is not None else None)
            )
            if target is not None and by_key[target].row is None:
                by_key[target] = by_key[target]._replace(row=row)
                continue
            # A second caption row for an image, or a row naming a file that is not on disk.
            key, reason, detail = keys.claim_or_reject(stem, f"caption row {row}")
            if reason is not None:
                by_key[key] = Entry(key, None, ext, row, reason, detail)
            elif target is not None:
                by_key[key] = Entry(key, by_key[target].rel_path, by_key[target].image_ext, row)
            else:
                by_key[key] = Entry(key, None, ext, row)
        return sorted(by_key.values(), key=lambda e: e.key)

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.root,
            "shards": len(self.shards()),
            "samples": len(self.entries()),
            "options": {
                "captions": self.captions,
                "key_column": self.key_column,
                "caption_column": self.caption_column,
                "image_exts": list(self.image_exts),
                "max_member_bytes": self.max_member_bytes,
                **self._file_options(),
            },
        }

    def start_notes(self) -> list[str]:
        entries = self.entries()
        table = self._load_table()
        root = self.root
        if table is None:
            if self._n_images == 0:
                return [f"found no images under {root!r} (extensions: {', '.join(self.image_exts)})"]
            if self._n_txt:
                return []
            note = (
                f"found {self._n_images:,} images under {root!r} but no captions: put a captions.jsonl/"
                f"metadata.jsonl (file_name, caption) in the folder or set input.options.captions: PATH"
            )
            coco = sorted(glob.glob(os.path.join(glob.escape(root), "annotations", "captions_*.json")))
            if coco:
                note += f"; for COCO give input.path: {coco[0]} (format coco)"
            return [note]
        notes = table.notes()
        if self._other_caption_files:
            notes.append(
                f"read captions from {self.captions!r}, not from {', '.join(map(repr, self._other_caption_files))}: "
                f"set input.options.captions: PATH to choose"
            )
        missing = [e for e in entries if e.rel_path is None and e.row is not None and e.reason is None]
        if missing:
            example = table.paths()[missing[0].row]
            notes.append(
                f"{len(missing):,} of {table.n_rows:,} rows of caption file {self.captions!r} name images not "
                f"found under {root!r} (e.g. {example!r}): they will be rejected as missing_image; the "
                f"{self.key_column!r} paths must be relative to the folder (or set input.options.key_column)"
            )
        uncaptioned = sum(1 for e in entries if e.rel_path is not None and e.row is None)
        if uncaptioned:
            notes.append(
                f"{uncaptioned:,} of {self._n_images:,} images under {root!r} have no row in caption file "
                f"{self.captions!r}: their caption is null"
            )
        return notes

    # -- reading -------------------------------------------------------------------------------------
    def _text(self, root_real: str, entry: Entry) -> tuple[str | None, str, str | None, str | None]:
        table = self._load_table()
        if table is not None:
            return table.caption_and_meta(entry.row)
        return self._sidecars(root_real, entry)

    def _sidecars(self, root_real: str, entry: Entry) -> tuple[str | None, str, str | None, str | None]:
        if entry.rel_path is None:
            return None, "{}", None, None
        stem = split_ext(entry.rel_path, self.image_exts)[0]
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
