"""`open_reader(path, format="auto", **options)`: the one entry point from an input spec to a Reader.

Auto-detection (detect_format), in this order:
- a tar file, a glob or brace pattern, or a list of paths: webdataset;
- a .parquet file: hf when it has an image-bytes column (binary, or the datasets Image struct), else table;
- a .arrow file: hf; a .csv/.tsv file: table;
- a .json/.jsonl/.ndjson file: coco when it is named captions_*.json, or is a .json file whose top level is an
  object naming "images" in its first MiB; table when its first record has an image-path column
  (table.IMAGE_PATH_COLUMNS) and no `conversations`; else llava (conversation records, and anything else: the
  LLaVA reader says what is wrong with it);
- a directory holding manifest.json and samples.parquet: mmcurate (an earlier run's output, io.run_reader);
- a directory: webdataset when it holds tar files (img2dataset's .parquet and _stats.json beside them are ignored);
  hf when it holds dataset_dict.json, state.json with .arrow files, or .parquet files (at its top or under data/)
  with image bytes (img2dataset's `output_format: parquet`); else folder (an image folder, HF ImageFolder with
  metadata.*, img2dataset's `files` output).
"""

from __future__ import annotations

import inspect
import json
import os

from mmcurate.io import paths
from mmcurate.io.base import Reader
from mmcurate.io.coco import CocoReader
from mmcurate.io.folder import CAPTION_FILES, FolderReader
from mmcurate.io.hf_parquet import HfParquetReader, parquet_has_images
from mmcurate.io.llava import LlavaReader
from mmcurate.io.run_reader import RunReader
from mmcurate.io.table import IMAGE_PATH_COLUMNS, TableReader
from mmcurate.io.webdataset import TAR_SUFFIXES, WebDatasetReader
from mmcurate.pipeline.reuse import is_run_dir

READERS: dict[str, type[Reader]] = {
    "webdataset": WebDatasetReader,
    "folder": FolderReader,
    "llava": LlavaReader,
    "table": TableReader,
    "hf": HfParquetReader,
    "coco": CocoReader,
    "mmcurate": RunReader,  # a finished run's output: its kept samples and stored columns (pipeline.reuse)
}
FORMATS = ("auto", *READERS)

# How much of a JSON/JSONL file detection reads to find its first record.
_PEEK_BYTES = 1 << 20


def _first_record(path: str) -> tuple[str, object]:
    """("object", whether its start names "images") for a .json file holding an object; ("record", the first record
    of a JSON list or JSONL file, or None when it cannot be read from the file's start)."""
    with os.fdopen(paths.open_regular_fd(path), "rb") as f:
        head = f.read(_PEEK_BYTES).decode("utf-8", "replace")
    text = head.lstrip("\ufeff \t\r\n")
    if path.lower().endswith(".json"):
        if text.startswith("{"):
            return "object", '"images"' in text
        if not text.startswith("["):
            return "record", None
        text = text[1:].lstrip()
    else:
        text = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record, _ = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        return "record", None
    return "record", record


def _detect_json(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.startswith("captions_") and name.endswith(".json"):
        return "coco"
    kind, record = _first_record(path)
    if kind == "object":
        return "coco" if record else "llava"
    if isinstance(record, dict) and "conversations" not in record and any(c in record for c in IMAGE_PATH_COLUMNS):
        return "table"
    return "llava"


def _detect_dir(p: str) -> str:
    names = [n for n in os.listdir(p) if not n.startswith(".")]
    if any(n.lower().endswith(TAR_SUFFIXES) for n in names):
        return "webdataset"
    if "dataset_dict.json" in names:
        return "hf"
    if "state.json" in names and any(n.endswith(".arrow") for n in names):
        return "hf"
    candidates = [
        os.path.join(p, n) for n in sorted(names) if n.lower().endswith(".parquet") and n not in CAPTION_FILES
    ]
    data = os.path.join(p, "data")
    if not candidates and os.path.isdir(data):
        for dirpath, dirnames, filenames in os.walk(data):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            candidates.extend(os.path.join(dirpath, n) for n in sorted(filenames) if n.lower().endswith(".parquet"))
            if candidates:
                break
    for f in candidates[:3]:
        if os.path.isfile(f) and parquet_has_images(f):
            return "hf"
    return "folder"


def detect_format(path) -> str:
    """The format of an input (see the module docstring for the rules)."""
    if not isinstance(path, (str, os.PathLike)):
        return "webdataset"
    p = os.fspath(path)
    if is_run_dir(p):
        return RunReader.format
    lower = p.lower()
    if lower.endswith(TAR_SUFFIXES) or set("*?[{") & set(p):
        return "webdataset"
    if paths.is_url(p):
        raise ValueError(f"cannot tell the format of {p!r}; pass format= one of {', '.join(READERS)}")
    if os.path.isdir(p):
        return _detect_dir(p)
    if not os.path.exists(p):
        raise FileNotFoundError(f"input {p!r} does not exist")
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        if not os.path.isfile(p):
            return "llava"  # the reader says what is wrong with it
        return _detect_json(p)
    if lower.endswith(".parquet"):
        return "hf" if os.path.isfile(p) and parquet_has_images(p) else "table"
    if lower.endswith(".arrow"):
        return "hf"
    if lower.endswith((".csv", ".tsv")):
        return "table"
    raise ValueError(
        f"cannot tell the format of {p!r} (not a tar, a directory, a .json/.jsonl, .csv/.tsv or .parquet file); "
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
