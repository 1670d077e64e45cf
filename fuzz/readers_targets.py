"""The readers under test and what counts as a documented outcome: shared by the atheris target
(fuzz/readers_fuzzer.py) and the regression tests (tests/hostile/test_fuzz_regressions.py).

Byte 0 of an input picks the target, the rest is its input:
  0  a WebDataset shard (.tar; tarfile auto-detects gzip/bz2/xz) read through WebDatasetReader.read
  1  a meta text through keys.normalize_meta (and the member-name / key helpers)
  2  a LLaVA .json file through LlavaReader (open, shards, read)
  3  a LLaVA .jsonl file, likewise

Documented outcomes: rows (kept or rejected downstream), ShardReadError for an unreadable shard,
DuplicateKeyError for a repeated key, and ValueError for a LLaVA file that is not valid JSON / not a list
of objects (raised when the reader is opened, naming the file). run_one raises anything else.
"""

from __future__ import annotations

import json
import os

from mmcurate.io import keys, webdataset
from mmcurate.io.llava import LlavaReader


def expected_errors() -> tuple:
    types = [webdataset.ShardReadError, keys.DuplicateKeyError]
    # Shard-damage outcomes the reader may define; accepted when they exist.
    for name in ("ShardError", "ShardDamage"):
        if isinstance(getattr(webdataset, name, None), type):
            types.append(getattr(webdataset, name))
    return tuple(types)


class Workdir:
    """A scratch directory with an image root holding one image a LLaVA entry can name."""

    def __init__(self, path: str):
        self.path = path
        self.root = os.path.join(path, "root")
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "a.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0" + b"\0" * 16)

    def write(self, name: str, data: bytes) -> str:
        p = os.path.join(self.path, name)
        with open(p, "wb") as f:
            f.write(data)
        return p


def _webdataset(work: Workdir, data: bytes) -> int:
    path = work.write("shard.tar", data)
    reader = webdataset.WebDatasetReader(path, on_duplicate_key="suffix" if len(data) % 2 else "error")
    rows = 0
    for table in reader.read(path, batch_size=4):
        rows += table.num_rows
        for meta in table.column("meta").to_pylist():
            if meta is not None and not isinstance(json.loads(meta), dict):  # stages json.loads the meta
                raise AssertionError("reader produced a meta that is not a JSON object")
    return rows


def _meta(data: bytes) -> int:
    text = data.decode("utf-8", errors="replace")
    if not isinstance(json.loads(keys.normalize_meta(text)), dict):
        raise AssertionError("normalize_meta returned a non-object")
    raw, _ = keys.split_member_name(text)
    if raw is not None:
        keys.key_to_member_base(keys.member_base_to_key(raw))
    return 1


def _llava(work: Workdir, data: bytes, suffix: str) -> int:
    path = work.write("data" + suffix, data)
    try:
        reader = LlavaReader(
            path, image_root=work.root, shard_size=3, on_duplicate_key="suffix" if len(data) % 2 else "error"
        )
    except ValueError as exc:
        # Documented: a malformed file fails when the reader is opened, naming the file.
        if isinstance(exc, keys.DuplicateKeyError) or path in str(exc):
            return 0
        raise
    rows = 0
    for shard in reader.shards():
        for table in reader.read(shard, batch_size=2):
            rows += table.num_rows
    return rows


def run_one(work: Workdir, data: bytes) -> int:
    """Rows read from one input; documented errors return 0, anything else propagates."""
    if not data:
        return 0
    target, body = data[0] % 4, data[1:]
    try:
        if target == 0:
            return _webdataset(work, body)
        if target == 1:
            return _meta(body)
        return _llava(work, body, ".json" if target == 2 else ".jsonl")
    except expected_errors():
        return 0
