"""`open_reader(path, format="auto", **options)`: the one entry point from an input spec to a Reader."""

from __future__ import annotations

import inspect
import os

from mmcurate.io import paths
from mmcurate.io.base import Reader
from mmcurate.io.folder import FolderReader
from mmcurate.io.llava import LlavaReader
from mmcurate.io.webdataset import TAR_SUFFIXES, WebDatasetReader

READERS: dict[str, type[Reader]] = {
    "webdataset": WebDatasetReader,
    "folder": FolderReader,
    "llava": LlavaReader,
}
FORMATS = ("auto", *READERS)


def detect_format(path) -> str:
    """webdataset for tar files, tar globs/brace lists, lists and directories holding tars; llava for
    .json/.jsonl files; folder for other directories."""
    if not isinstance(path, (str, os.PathLike)):
        return "webdataset"
    p = os.fspath(path)
    lower = p.lower()
    if lower.endswith(TAR_SUFFIXES) or set("*?[{") & set(p):
        return "webdataset"
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        return "llava"
    if paths.is_url(p):
        raise ValueError(f"cannot tell the format of {p!r}; pass format= one of {', '.join(READERS)}")
    if os.path.isdir(p):
        has_tars = any(n.lower().endswith(TAR_SUFFIXES) and not n.startswith(".") for n in os.listdir(p))
        return "webdataset" if has_tars else "folder"
    if not os.path.exists(p):
        raise FileNotFoundError(f"input {p!r} does not exist")
    raise ValueError(
        f"cannot tell the format of {p!r} (not a tar, a directory or a .json/.jsonl file); "
        f"pass format= one of {', '.join(READERS)}"
    )


def reader_options(fmt: str) -> list[str]:
    """The keyword options a format's reader accepts."""
    sig = inspect.signature(READERS[fmt].__init__)
    return [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def open_reader(path, format: str = "auto", **options) -> Reader:
    """A Reader for `path`. Unknown formats and options are errors that list the valid ones."""
    if format not in FORMATS:
        raise ValueError(f"unknown input format {format!r}; valid: {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    valid = reader_options(fmt)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for input format {fmt!r}; valid: {', '.join(valid)}"
        )
    return READERS[fmt](path, **options)
