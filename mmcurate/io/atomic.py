"""Atomic file writes: write to a temp file in the destination's directory, fsync, then `os.replace`.

A reader never sees a half-written file: until the rename, the data lives under a hidden temp name
(`.NAME.tmp-PID-RANDOM`) that no shard listing matches; after it, the complete file is there. A crash
leaves at most a stale temp file, which `remove_stale_temp_files` clears on the next run.

A write that fails for want of space (ENOSPC, EDQUOT) raises an OSError naming the destination path, and
the temp file is removed. After `discard()` the file a writer holds swallows writes and close, so a writer
that flushes on garbage collection (ParquetWriter, tarfile) cannot raise a second, unrelated error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_MARKER = ".tmp-"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def temp_path_for(path: str | os.PathLike) -> Path:
    """A hidden, unique temp name next to `path` (same directory, so the rename stays on one filesystem)."""
    p = Path(path)
    return p.with_name(f".{p.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_file(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every filesystem supports opening a directory, so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _with_path(exc: OSError, path: Path) -> OSError:
    """The same OSError naming `path` when it names none (a write through a file object names no file)."""
    if exc.filename is None and exc.errno is not None:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return exc


class _TempFile:
    """The temp file as writers see it: a binary file whose errors name the destination, and which does
    nothing once detached (the AtomicFile was discarded)."""

    def __init__(self, f: BinaryIO, path: Path):
        self._f = f
        self._path = path

    def write(self, data) -> int:
        if self._f is None:
            return len(data)
        try:
            return self._f.write(data)
        except OSError as exc:
            raise _with_path(exc, self._path) from None

    def flush(self) -> None:
        if self._f is not None:
            try:
                self._f.flush()
            except OSError as exc:
                raise _with_path(exc, self._path) from None

    def tell(self) -> int:
        return self._f.tell() if self._f is not None else 0

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:  # the AtomicFile closes the real file, on commit or discard
        pass

    @property
    def closed(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class AtomicFile:
    """A binary file written under a temp name; `commit()` renames it to `path`, `discard()` deletes it.

    For writers whose output outlives one `with` block (a shard filled across many write() calls).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temp_path = temp_path_for(self.path)
        self._fsync = fsync
        self._raw: BinaryIO = open(self.temp_path, "xb")
        self.file = _TempFile(self._raw, self.path)

    def commit(self) -> None:
        try:
            self._raw.flush()
            if self._fsync:
                os.fsync(self._raw.fileno())
            self._raw.close()
        except OSError as exc:
            self.discard()
            raise _with_path(exc, self.path) from None
        os.replace(self.temp_path, self.path)
        if self._fsync:
            _fsync_dir(self.path.parent)

    def discard(self) -> None:
        self.file._f = None
        try:
            self._raw.close()  # flushes what is buffered: fails again on a full disk, and does not matter
        except OSError:
            pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `path` only if the block exits without an exception."""
    out = AtomicFile(path, fsync)
    try:
        yield out.file
    except OSError as exc:
        out.discard()
        if exc.errno in _NO_SPACE:  # say which file could not be written
            raise _with_path(exc, out.path) from None
        raise
    except BaseException:
        out.discard()
        raise
    out.commit()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete temp files a killed writer left in `directory` (not recursive); returns what was removed.

    Only call this when no other writer is using the directory: a live writer's temp file looks the same.
    """
    d = Path(directory)
    removed = []
    if not d.is_dir():
        return removed
    for entry in sorted(os.listdir(d)):
        if is_temp_file(entry) and (d / entry).is_file():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(d / entry)
                removed.append(str(d / entry))
    return removed
