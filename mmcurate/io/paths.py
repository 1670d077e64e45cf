"""Turning a user's input spec into a sorted list of files, and opening them (local or fsspec URLs).

Spec forms: a path, a glob (`data/*.tar`), a brace list as webdataset writes it
(`shard-{00000..00009}.tar`, `{a,b}.tar`), a directory (its files with the wanted suffixes, not
recursive), a URL (`s3://...`, opened through fsspec when installed), or a list of any of these.
"""
from __future__ import annotations

import glob as _glob
import os
import re
from typing import BinaryIO, Iterable

_BRACE_RE = re.compile(r"\{([^{}]*)\}")
_RANGE_RE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
_GLOB_CHARS = set("*?[")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _strip_file_scheme(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: `{0..3}`, zero-padded `{000..012}`, steps `{0..10..2}`, lists `{a,b}`,
    nested and repeated groups; in bash's order (left to right)."""
    m = _BRACE_RE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = _RANGE_RE.match(body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        step = abs(int(rng.group(3) or 1)) or 1
        padded = any(len(g.lstrip("-")) > 1 and g.lstrip("-").startswith("0") for g in rng.group(1, 2))
        width = max(len(rng.group(1)), len(rng.group(2))) if padded else 0
        seq = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        options = [str(v).zfill(width) for v in seq]
    elif "," in body:
        options = body.split(",")
    else:
        # `{x}` without a range or comma is literal in bash; keep it and expand what follows.
        return [pattern[: m.end()] + rest for rest in expand_braces(pattern[m.end():])]
    out = []
    for opt in options:
        out.extend(expand_braces(pattern[: m.start()] + opt + pattern[m.end():]))
    return out


def _fs_for(url: str):
    try:
        import fsspec
    except ImportError as exc:
        raise RuntimeError(f"{url!r}: reading URLs needs fsspec (pip install fsspec and the protocol's "
                           "package, e.g. s3fs)") from exc
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
        hits = [os.path.join(item, n) for n in os.listdir(item)
                if _wanted(n, suffixes) and os.path.isfile(os.path.join(item, n))]
        if not hits:
            raise FileNotFoundError(f"no {'/'.join(suffixes)} files in directory {item!r}")
        return hits
    if not os.path.exists(item):
        raise FileNotFoundError(f"{item!r} does not exist")
    return [item]


def open_binary(path: str) -> BinaryIO:
    """Open a local path or an fsspec URL for binary reading."""
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(_strip_file_scheme(path), "rb", buffering=1 << 20)


def exists(path: str) -> bool:
    if is_url(path):
        fs, p = _fs_for(path)
        return fs.exists(p)
    return os.path.exists(_strip_file_scheme(path))
