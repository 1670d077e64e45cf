"""Turning a user's input spec into a sorted list of files, and opening them (local or fsspec URLs).

Spec forms: a path, a glob (`data/*.tar`), a brace list as webdataset writes it
(`shard-{00000..00009}.tar`, `{a,b}.tar`), a directory (its files with the wanted suffixes, not
recursive), a URL (`s3://...`, opened through fsspec when installed), or a list of any of these.
"""

from __future__ import annotations

import glob as _glob
import os
import re
import stat
from collections.abc import Iterable
from typing import BinaryIO

from mmcurate.io.keys import short_repr

_BRACE_RE = re.compile(r"\{([^{}]*)\}")
_RANGE_RE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
_GLOB_CHARS = set("*?[")
# One input spec may name at most this many paths after brace expansion (a shard list of LAION-5B at 10k
# samples per shard is 500k names); more is a typo like `{0..99999}{0..99999}`, caught before expanding.
MAX_BRACE_EXPANSIONS = 1_000_000


class NotRegularFileError(OSError):
    """The path is a FIFO, device, socket or directory: reading it could block forever or never end."""


class FileTooLargeError(OSError):
    """The file is larger than the caller's byte limit (nothing past the limit was read)."""


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _strip_file_scheme(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _brace_group(body: str):
    """A group's options as (count, iterable of strings), or None for a literal `{x}`."""
    rng = _RANGE_RE.match(body)
    if rng:
        try:
            lo, hi, step = int(rng.group(1)), int(rng.group(2)), abs(int(rng.group(3) or 1)) or 1
        except ValueError:  # more digits than Python converts
            raise ValueError(f"brace range {{{body[:40]}}} has numbers too long to expand") from None
        padded = any(len(g.lstrip("-")) > 1 and g.lstrip("-").startswith("0") for g in rng.group(1, 2))
        width = max(len(rng.group(1)), len(rng.group(2))) if padded else 0
        seq = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        return len(seq), (str(v).zfill(width) for v in seq)
    if "," in body:
        options = body.split(",")
        return len(options), options
    return None


def _count_expansions(pattern: str, limit: int) -> int:
    """How many strings expand_braces(pattern) gives, or any number > limit once it is known to exceed it;
    without building them (a range counts as len(range))."""
    m = _BRACE_RE.search(pattern)
    if m is None:
        return 1
    group = _brace_group(m.group(1))
    if group is None:
        return _count_expansions(pattern[m.end() :], limit)
    n, options = group
    if "{" not in pattern[: m.start()]:
        # Nothing before the group can combine with an option into a new group: count = n * the rest's.
        return n * _count_expansions(pattern[m.end() :], limit) if n else 0
    total = 0  # nested: an option may complete an outer group; count each, stopping past the limit
    for opt in options:
        total += _count_expansions(pattern[: m.start()] + opt + pattern[m.end() :], limit - total)
        if total > limit:
            break
    return total


def expand_braces(pattern: str, limit: int = MAX_BRACE_EXPANSIONS) -> list[str]:
    """Bash-style brace expansion: `{0..3}`, zero-padded `{000..012}`, steps `{0..10..2}`, lists `{a,b}`,
    nested and repeated groups; in bash's order (left to right). ValueError when the result would hold more
    than `limit` strings (counted before expanding)."""
    n = _count_expansions(pattern, limit)
    if n > limit:
        shown = f"{n:,}" if n < 10**30 else f"about 10^{len(str(n)) - 1}"
        raise ValueError(
            f"pattern {pattern[:200]!r} expands to {shown} paths (limit {limit:,}); list the shards or use a glob"
        )
    return _expand(pattern)


def _expand(pattern: str) -> list[str]:
    m = _BRACE_RE.search(pattern)
    if m is None:
        return [pattern]
    group = _brace_group(m.group(1))
    if group is None:
        # `{x}` without a range or comma is literal in bash; keep it and expand what follows.
        return [pattern[: m.end()] + rest for rest in _expand(pattern[m.end() :])]
    out = []
    for opt in group[1]:
        out.extend(_expand(pattern[: m.start()] + opt + pattern[m.end() :]))
    return out


def _fs_for(url: str):
    try:
        import fsspec
    except ImportError as exc:
        raise RuntimeError(
            f"{url!r}: reading URLs needs fsspec (pip install fsspec and the protocol's package, e.g. s3fs)"
        ) from exc
    return fsspec.core.url_to_fs(url)


def list_files(spec: str | os.PathLike | Iterable, suffixes: tuple[str, ...]) -> list[str]:
    """Every file the spec names, sorted and without repeats. A directory contributes its files ending in
    one of `suffixes` (case-insensitive). Raises FileNotFoundError for a missing path or a pattern that
    matches nothing, saying which."""
    if isinstance(spec, (str, os.PathLike)):
        specs = [os.fspath(spec)]
    else:
        specs = [os.fspath(s) for s in spec]
        if not specs:
            raise FileNotFoundError("empty list of input paths")
    found: set[str] = set()
    for s in specs:
        for item in expand_braces(s):
            found.update(_list_one(item, suffixes))
    return sorted(found)


def _wanted(name: str, suffixes) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.lower().endswith(suffixes) and not base.startswith(".")


def _list_one(item: str, suffixes) -> list[str]:
    if is_url(item):
        fs, path = _fs_for(item)
        if _GLOB_CHARS & set(path):
            hits = [fs.unstrip_protocol(p) for p in fs.glob(path) if fs.isfile(p)]
            if not hits:
                raise FileNotFoundError(f"no files match {item!r}")
            return hits
        if fs.isdir(path):
            hits = [fs.unstrip_protocol(p) for p in fs.ls(path, detail=False) if _wanted(p, suffixes)]
            if not hits:
                raise FileNotFoundError(f"no {'/'.join(suffixes)} files in {item!r}")
            return hits
        if not fs.exists(path):
            raise FileNotFoundError(f"{item!r} does not exist")
        return [item]
    item = _strip_file_scheme(item)
    if _GLOB_CHARS & set(item):
        hits = [p for p in _glob.glob(item) if os.path.isfile(p)]
        if not hits:
            raise FileNotFoundError(f"no files match {item!r}")
        return hits
    if os.path.isdir(item):
        hits = [
            os.path.join(item, n)
            for n in os.listdir(item)
            if _wanted(n, suffixes) and os.path.isfile(os.path.join(item, n))
        ]
        if not hits:
            raise FileNotFoundError(f"no {'/'.join(suffixes)} files in directory {item!r}")
        return hits
    if not os.path.exists(item):
        raise FileNotFoundError(f"{item!r} does not exist")
    if not os.path.isfile(item):  # a FIFO would block the run forever, a device never end
        raise ValueError(
            f"input {item!r} is not a regular file ({_kind(os.stat(item).st_mode)}); "
            f"give tar files, a directory of them or a pattern"
        )
    return [item]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular_fd(path: str, *, follow_symlinks: bool = True) -> int:
    """An fd open for reading on a regular file, else NotRegularFileError. Checks with stat before opening
    (opening a FIFO blocks), opens non-blocking, and checks fstat again (the path may have been swapped)."""
    st = os.stat(path, follow_symlinks=follow_symlinks)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{_kind(st.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most `max_bytes`. NotRegularFileError, FileTooLargeError (never reads
    more than max_bytes + 1 bytes, even from a file that grows), or the OSError of stat/open/read."""
    fd = open_regular_fd(path, follow_symlinks=follow_symlinks)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise FileTooLargeError(f"{size:,} bytes (limit {max_bytes:,})")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise FileTooLargeError(f"more than {max_bytes:,} bytes (it grew while read)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_inside(path: str, root_real: str) -> bool:
    """Whether `path` (already realpath'ed) lies inside the directory `root_real` (realpath'ed)."""
    try:
        return os.path.commonpath([path, root_real]) == root_real
    except ValueError:  # different drives / a mix of absolute and relative
        return False


def read_inside_root(
    root_real: str, rel: str, max_bytes: int, allow_outside_root: bool, limit_name: str = "max_image_bytes"
) -> tuple[bytes | None, str | None, str | None]:
    """(bytes, None, None) for `root_real / rel`, (None, None, None) when it does not exist, or (None, reason,
    detail) for a path a reader must not or cannot read: bad_path (a NUL), path_outside_root, not_a_file,
    too_large (over max_bytes; never read past it), unreadable (another OSError). `rel` may be absolute
    or hold '..': the resolved path decides."""
    if "\x00" in rel:
        return None, "bad_path", f"path {short_repr(rel)} contains a NUL byte"
    real = os.path.realpath(os.path.join(root_real, rel))
    if not allow_outside_root and not is_inside(real, root_real):
        return (
            None,
            "path_outside_root",
            (
                f"{short_repr(rel)} resolves to {short_repr(real)}, outside "
                f"{short_repr(root_real)}; set allow_outside_root to read it"
            ),
        )
    try:
        # realpath resolved every link: a link in the last component now means it was swapped since.
        return read_bounded(real, max_bytes, follow_symlinks=allow_outside_root), None, None
    except FileNotFoundError:
        return None, None, None
    except NotRegularFileError as exc:
        return None, "not_a_file", f"{short_repr(rel)}: {exc}"
    except FileTooLargeError as exc:
        return None, "too_large", f"{short_repr(rel)}: {exc} (reader option {limit_name})"
    except (OSError, ValueError) as exc:
        return None, "unreadable", f"{short_repr(rel)}: {type(exc).__name__}: {exc}"


def open_binary(path: str) -> BinaryIO:
    """Open a local path or an fsspec URL for binary reading; a local path must be a regular file
    (NotRegularFileError otherwise, never blocking on a FIFO)."""
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return os.fdopen(open_regular_fd(_strip_file_scheme(path)), "rb", buffering=1 << 20)


def exists(path: str) -> bool:
    if is_url(path):
        fs, p = _fs_for(path)
        return fs.exists(p)
    return os.path.exists(_strip_file_scheme(path))
