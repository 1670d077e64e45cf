"""Readers whose samples are image files under one root directory, listed when the reader opens (an image folder,
a list file of image paths, COCO captions): one implementation of the listing's shards and of reading a file.

- The subclass lists its samples as `Entry`s (key, image path relative to the root, where its caption and meta
  come from) in a stable order; shards are fixed chunks of that list: `SOURCE@00000` covers [0, shard_size).
- An entry's image is read with paths.read_inside_root: only files inside the root (a path or symlink that
  resolves outside it is `path_outside_root` unless allow_outside_root), regular files only (`not_a_file`),
  at most max_image_bytes (`too_large`). A listed image that is not on disk is a row with image null (the
  integrity stage rejects it as missing_image), so nothing listed is silently lost.
- An entry known unreadable at listing time (a bad key, a malformed record) is a reject row with its reason.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from typing import NamedTuple

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import (
    DEFAULT_MAX_BATCH_BYTES,
    Batcher,
    Reader,
    check_byte_limit,
    check_flag,
)
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, short_repr, sniff_image_ext


class Entry(NamedTuple):
    key: str
    rel_path: str | None  # image path relative to the root; None when there is no image file to read
    image_ext: str | None
    row: int | None  # where the subclass finds the caption and meta (a table row, a record index)
    reason: str | None = None  # set for a sample known unreadable at listing time
    detail: str | None = None


def split_ext(rel: str, image_exts=IMAGE_EXTS) -> tuple[str, str | None]:
    """(path without its image extension, the extension lower-cased), or (rel, None) if it has none."""
    stem, dot, ext = rel.rpartition(".")
    if dot and "/" not in ext and ext.lower() in image_exts and stem and not stem.endswith("/"):
        return stem, ext.lower()
    return rel, None


def normalize_rel(value) -> str:
    """A table's image path as a '/'-separated relative path: backslashes, leading './' and outer '/' dropped."""
    rel = str(value).replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel.strip("/")


def outside_root(root_real: str, rel: str) -> str | None:
    """The path_outside_root detail when `root_real / rel` resolves outside the root, else None."""
    if "\x00" in rel:
        return None
    real = os.path.realpath(os.path.join(root_real, rel))
    if paths.is_inside(real, root_real):
        return None
    return (
        f"{short_repr(rel)} resolves to {short_repr(real)}, outside {short_repr(root_real)}; "
        f"set allow_outside_root to read it"
    )


def check_shard_size(shard_size) -> int:
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    return shard_size


class ImageFileReader(Reader):
    """Base of the readers whose samples are files under `root`; `source` names the shards (`SOURCE@00000`)."""

    _CACHE_ATTRS: tuple[str, ...] = ("_entries",)
    #: What the error messages call the input ("image folder", "list file", ...).
    what = "input"

    def _init_files(
        self,
        source: str,
        root: str,
        *,
        shard_size: int,
        on_duplicate_key: str,
        max_image_bytes: int,
        allow_outside_root: bool,
    ) -> None:
        self.source = source
        self.root = root
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.what} root {self.root!r} does not exist or is not a directory")
        self.shard_size = check_shard_size(shard_size)
        KeyRegistry(on_duplicate_key, "")  # validates the policy
        self.on_duplicate_key = on_duplicate_key
        self.max_image_bytes = check_byte_limit("max_image_bytes", max_image_bytes)
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self._entries: list[Entry] | None = None

    @abc.abstractmethod
    def _list(self) -> list[Entry]:
        """Every sample, in the stable order the shards cut."""

    @abc.abstractmethod
    def _text(self, root_real: str, entry: Entry) -> tuple[str | None, str, str | None, str | None]:
        """(caption, meta JSON text, reject reason, detail) of an entry whose image read fine."""

    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = self._list()
        return self._entries

    def _keys(self) -> KeyRegistry:
        return KeyRegistry(self.on_duplicate_key, f"{self.what} {self.source!r}")

    # -- shards ----------------------------------------------------------------------------------------
    def shards(self) -> list[str]:
        n = len(self.entries())
        n_shards = -(-n // self.shard_size)
        width = max(5, len(str(max(n_shards - 1, 0))))
        return [f"{self.source}@{i:0{width}d}" for i in range(n_shards)]

    def _shard_range(self, shard: str) -> tuple[int, int]:
        entries = self.entries()
        source, at, index = shard.rpartition("@")
        if not at or source != self.source or not index.isdigit() or int(index) * self.shard_size >= len(entries):
            raise ValueError(f"unknown shard {shard!r} for {self.what} {self.source!r} ({len(self.shards())} shards)")
        start = int(index) * self.shard_size
        return start, min(start + self.shard_size, len(entries))

    def count(self, shard: str) -> int | None:
        start, stop = self._shard_range(shard)
        return stop - start

    def _file_options(self) -> dict:
        return {
            "shard_size": self.shard_size,
            "on_duplicate_key": self.on_duplicate_key,
            "max_image_bytes": self.max_image_bytes,
            "allow_outside_root": self.allow_outside_root,
        }

    # -- reading ---------------------------------------------------------------------------------------
    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        start, stop = self._shard_range(shard)
        batcher = Batcher(batch_size, max_batch_bytes, self.schema)
        root_real = os.path.realpath(self.root)
        for entry in self.entries()[start:stop]:
            batch = self._row(batcher, shard, root_real, entry)
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def _row(self, batcher: Batcher, shard: str, root_real: str, entry: Entry) -> pa.Table | None:
        if entry.reason is not None:
            return batcher.add_reject(entry.key, shard, entry.reason, entry.detail, entry.image_ext)
        image = None
        if entry.rel_path is not None:
            image, reason, detail = self._read_file(root_real, entry.rel_path, self.max_image_bytes)
            if reason is not None:
                return batcher.add_reject(entry.key, shard, reason, detail, entry.image_ext)
        caption, meta, reason, detail = self._text(root_real, entry)
        if reason is not None:
            return batcher.add_reject(entry.key, shard, reason, detail, entry.image_ext)
        image_ext = entry.image_ext if entry.image_ext is not None or image is None else sniff_image_ext(image)
        return batcher.add(entry.key, shard, image, image_ext, caption, meta)

    def _read_file(self, root_real: str, rel: str, max_bytes: int, limit_name: str = "max_image_bytes"):
        """(bytes or None when missing, reason, detail): paths.read_inside_root under this reader's rules."""
        return paths.read_inside_root(root_real, rel, max_bytes, self.allow_outside_root, limit_name)
