"""Writes samples as WebDataset tar shards with the original image bytes.

Each sample becomes `KEY.<image_ext>` (the original bytes, never re-encoded), `KEY.txt` (the caption,
UTF-8; left out when the caption is null) and `KEY.json` (the meta text; "{}" when null), in that order,
samples in the order given. Headers are deterministic (mtime 0, uid/gid 0, no user/group names, mode
0644, PAX format), so the same samples give byte-identical shards on every run. A shard is written to a
hidden temp file in the shards directory and renamed into place when complete: a reader never sees a
partial `NNNNN.tar`, even if the process is killed mid-shard.

Keys keep their directories as tar paths (`cats/001` -> `cats/001.jpg`); a dot in a key's last
component is escaped (see mmcurate.io.keys), so our reader returns every key unchanged.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa

from mmcurate.io.atomic import AtomicFile
from mmcurate.io.keys import check_key, key_to_member_base

_EXT_RE = re.compile(r"^[a-z0-9]+$")
_RESERVED_EXTS = ("txt", "json")
WRITE_COLUMNS = ("key", "image", "image_ext", "caption", "meta")


class _HashingFile:
    """Forwards writes to a file and hashes them on the way, so the sha256 costs no second read."""

    def __init__(self, f):
        self._f = f
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        if self._f is None:  # detached by abort(): tarfile may still flush on close/garbage collection
            return len(data)
        self.sha256.update(data)
        return self._f.write(data)

    def detach(self) -> None:
        self._f = None

    def tell(self) -> int:
        return self._f.tell()


class ShardWriter:
    """`with ShardWriter(out_dir, shard_size=1000) as w: w.write(table)`; `close()` returns
    [(path, n_samples, sha256), ...] for the shards this writer published.

    Shards go to `out_dir/<subdir>/<prefix><index:05d>.tar`, numbered from start_index. A writer left
    through an exception (or `abort()`) publishes nothing more: the shard in progress is discarded.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        shard_size: int,
        start_index: int = 0,
        prefix: str = "",
        *,
        subdir: str = "shards",
    ):
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        if not isinstance(start_index, int) or start_index < 0:
            raise ValueError(f"start_index must be a non-negative integer, got {start_index!r}")
        if "/" in prefix or "\\" in prefix:
            raise ValueError(f"prefix {prefix!r} must not contain path separators")
        self.directory = Path(out_dir) / subdir if subdir else Path(out_dir)
        self.shard_size = shard_size
        self.prefix = prefix
        self._index = start_index
        self._written: list[tuple[str, int, str]] = []
        self._output: AtomicFile | None = None  # the shard in progress
        self._tar = None
        self._hasher = None
        self._n = 0
        self._keys: set[str] = set()
        self._closed = False

    def shard_path(self, index: int) -> Path:
        return self.directory / f"{self.prefix}{index:05d}.tar"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def write(self, table: pa.Table) -> None:
        """Append the table's rows (columns key, image, image_ext, caption, meta; others are ignored)."""
        if self._closed:
            raise ValueError("write() on a closed ShardWriter")
        missing = [c for c in WRITE_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"ShardWriter.write: table lacks column(s) {missing}; needs {list(WRITE_COLUMNS)}")
        for batch in table.select(list(WRITE_COLUMNS)).to_batches(max_chunksize=256):
            rows = batch.to_pydict()
            for key, image, ext, caption, meta in zip(*(rows[c] for c in WRITE_COLUMNS)):
                self.write_sample(key, image, ext, caption, meta)

    def write_sample(
        self, key: str, image: bytes | None, image_ext: str | None, caption: str | None, meta: str | None
    ) -> None:
        check_key(key)
        if image is not None and (
            not isinstance(image_ext, str) or not _EXT_RE.match(image_ext) or image_ext in _RESERVED_EXTS
        ):
            raise ValueError(
                f"sample {key!r}: image_ext {image_ext!r} must be a lower-case alphanumeric "
                f"suffix other than {_RESERVED_EXTS}"
            )
        if self._tar is None:
            self._open_shard()
        if key in self._keys:
            raise ValueError(f"sample key {key!r} written twice into {self.shard_path(self._index)}")
        self._keys.add(key)
        base = key_to_member_base(key)
        try:
            if image is not None:
                self._add_member(f"{base}.{image_ext}", image)
            if caption is not None:
                self._add_member(f"{base}.txt", caption.encode("utf-8"))
            self._add_member(f"{base}.json", (meta if meta is not None else "{}").encode("utf-8"))
            self._n += 1
            if self._n >= self.shard_size:
                self._publish_shard()
        except OSError:  # e.g. a full disk: drop the shard in progress (no temp file, no flush at exit)
            self.abort()
            raise

    def close(self) -> list[tuple[str, int, str]]:
        """Publish the shard in progress (if it has samples); returns every shard this writer published."""
        if not self._closed:
            if self._tar is not None:
                try:
                    self._publish_shard()
                except OSError:
                    self.abort()
                    raise
            self._closed = True
        return list(self._written)

    def abort(self) -> None:
        """Discard the shard in progress; shards already published stay."""
        if self._output is not None:
            self._hasher.detach()
            self._tar.close()
            self._output.discard()
        self._output = self._tar = self._hasher = None
        self._closed = True

    @property
    def written(self) -> list[tuple[str, int, str]]:
        return list(self._written)

    def _open_shard(self):
        self._output = AtomicFile(self.shard_path(self._index))
        self._hasher = _HashingFile(self._output.file)
        self._tar = tarfile.open(fileobj=self._hasher, mode="w|", format=tarfile.PAX_FORMAT)
        self._n = 0
        self._keys = set()

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def _publish_shard(self):
        self._tar.close()  # writes the end-of-archive blocks through the hashing file
        path = self.shard_path(self._index)
        self._output.commit()  # fsync + rename into place
        self._written.append((str(path), self._n, self._hasher.sha256.hexdigest()))
        self._output = self._tar = self._hasher = None
        self._index += 1
