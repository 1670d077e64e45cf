"""WebDataset tar shards as img2dataset writes them: `KEY.jpg|png|webp|...` + `KEY.txt` + `KEY.json`.

Members are streamed (`tarfile` mode `r|*`, plain or gzip/bz2/xz): one sample in memory at a time,
never the whole shard. Members are grouped into samples by WebDataset's rule (consecutive members
with the same key; the key is the member path up to the first dot of its file name, directories
included), and keys written escaped by our ShardWriter are unescaped (see mmcurate.io.keys).

Per sample: the first image member (by IMAGE_EXTS) is the image, `.txt` the caption (UTF-8; invalid
bytes become U+FFFD), `.json` the meta (see keys.normalize_meta for invalid JSON). Other members
(`.cls`, a second image, ...) are ignored. A sample without an image is still a row, with image null;
a sample without a caption has caption null.

Duplicate keys: within a shard, a key that comes back after other samples, or a member suffix that
repeats inside one sample (webdataset itself raises there), is a DuplicateKeyError by default, or is
kept as `KEY~N` with on_duplicate_key="suffix". Keys repeated across shards are not detected here
(that needs every key of the run; the executor can check it).
"""
from __future__ import annotations

import json
import os
import re
import tarfile
from typing import Iterator

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import DEFAULT_MAX_BATCH_BYTES, Batcher, Reader
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, member_base_to_key, normalize_meta, split_member_name

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# webdataset skips members named like `__meta__` (tariterators.tar_file_iterator's skip_meta).
_SKIP_META = re.compile(r"__[^/]*__($|/)")


class ShardReadError(IOError):
    """A shard could not be read to its end (truncated download, not a tar, unreadable member)."""


class WebDatasetReader(Reader):
    format = "webdataset"

    def __init__(self, path, *, caption_ext: str = "txt", meta_ext: str = "json",
                 image_exts: tuple[str, ...] = IMAGE_EXTS, on_duplicate_key: str = "error"):
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
        self.caption_ext = caption_ext.lower().lstrip(".")
        self.meta_ext = meta_ext.lower().lstrip(".")
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        KeyRegistry(on_duplicate_key, "")  # validates the policy now, not at the first read
        self.on_duplicate_key = on_duplicate_key
        self._shards = paths.list_files(self.path, TAR_SUFFIXES)

    def shards(self) -> list[str]:
        return list(self._shards)

    def count(self, shard: str) -> int | None:
        # img2dataset writes NNNNN_stats.json next to NNNNN.tar; "successes" is the number of samples in it.
        if paths.is_url(shard):
            return None
        stem = shard
        for suffix in TAR_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        try:
            with open(stem + "_stats.json", encoding="utf-8") as f:
                n = json.load(f).get("successes")
        except (OSError, ValueError, AttributeError):
            return None
        return n if isinstance(n, int) and n >= 0 else None

    def describe(self) -> dict:
        return {"format": self.format, "path": self.path, "shards": len(self._shards),
                "options": {"caption_ext": self.caption_ext, "meta_ext": self.meta_ext,
                            "image_exts": list(self.image_exts), "on_duplicate_key": self.on_duplicate_key}}

    def read(self, shard: str, batch_size: int = 256,
             max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> Iterator[pa.Table]:
        batcher = Batcher(batch_size, max_batch_bytes)
        for key, fields in self.iter_samples(shard):
            image_ext = next((s for s in fields if s in self.image_exts), None)
            caption = fields.get(self.caption_ext)
            meta = fields.get(self.meta_ext)
            batch = batcher.add(
                key, shard, fields[image_ext] if image_ext else None, image_ext,
                caption.decode("utf-8", errors="replace") if caption is not None else None,
                normalize_meta(meta.decode("utf-8", errors="replace") if meta is not None else None))
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def iter_samples(self, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(key, {suffix: bytes}) per sample, in tar order; suffixes in member order."""
        keys = KeyRegistry(self.on_duplicate_key, f"shard {shard!r}")
        current_raw, current_key, fields = None, None, {}
        n_samples = 0
        member_name = None
        try:
            with paths.open_binary(shard) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    member_name = member.name
                    if not member.isreg() or _SKIP_META.match(member.name):
                        continue
                    raw, suffix = split_member_name(member.name)
                    if raw is None:
                        continue
                    data = tar.extractfile(member).read()
                    if raw != current_raw or suffix in fields:
                        if current_raw is not None:
                            yield current_key, fields
                            n_samples += 1
                        detail = f"member {member.name!r}" + (" repeats a suffix of the sample before it"
                                                              if raw == current_raw else "")
                        current_raw, current_key, fields = raw, keys.claim(member_base_to_key(raw), detail), {}
                    fields[suffix] = data
        except (tarfile.TarError, EOFError, OSError) as exc:
            where = f" at member {member_name!r}" if member_name else ""
            raise ShardReadError(f"shard {shard!r}: unreadable{where} after {n_samples} samples: {exc}") from exc
        if current_raw is not None:
            yield current_key, fields
