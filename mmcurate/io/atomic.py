"""Atomic file writes: write to a temp file in the destination's directory, fsync, then `os.replace`.

A reader never sees a half-written file: until the rename, the data lives under a hidden temp name
(`.NAME.tmp-PID-RANDOM`) that no shard listing matches; after it, the complete file is there. A crash
leaves at most a stale temp file, which `remove_stale_temp_files` clears on the next run.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator

TEMP_MARKER = ".tmp-"


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


class AtomicFile:
    """A binary file written under a temp name; `commit()` renames it to `path`, `discard()` deletes it.

    For writers whose output outlives one `with` block (a shard filled across many write() calls).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temp_path = temp_path_for(self.path)
        self._fsync = fsync
        self.file: BinaryIO = open(self.temp_path, "xb")

    def commit(self) -> None:
        self.file.flush()
        if self._fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp_path, self.path)
        if self._fsync:
            _fsync_dir(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `path` only if the block exits without an exception."""
    out = AtomicFile(path, fsync)
    try:
        yield out.file
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
