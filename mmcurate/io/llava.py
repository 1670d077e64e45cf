"""LLaVA-style instruction data: a JSON list (or JSONL) of
`{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}`.

- key: the entry's `id`; without one, the image path without its extension; without either (a
  text-only entry with no id), `entry_<index>` — the only key tied to position, and said so here.
- image: `image_root / entry["image"]` (image_root defaults to the JSON file's directory). A list of
  images (multi-image entries) uses the first; the record in meta keeps them all. A missing file, or
  a text-only entry without "image", gives a row with image null, which the integrity stage rejects
  (text-only rows also have image_ext null and no "image" in meta).
- caption: the first answer (`from` "gpt" or "assistant"); null if there is none.
- meta: the whole record as JSON, so the conversations reach the output unchanged.
- Shards are fixed chunks of the entries in file order: `FILE@00000` covers entries [0, shard_size).

The file is parsed once per process and each entry kept as its compact JSON text (memory about the
size of the file); use JSONL for files too large for that.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

import pyarrow as pa

from mmcurate.io.base import DEFAULT_MAX_BATCH_BYTES, Batcher, Reader
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, sniff_image_ext

ANSWER_ROLES = ("gpt", "assistant")


def _first_answer(record: dict) -> str | None:
    for turn in record.get("conversations") or ():
        if isinstance(turn, dict) and turn.get("from") in ANSWER_ROLES and turn.get("value") is not None:
            return str(turn["value"])
    return None


def _image_path(record: dict) -> str | None:
    image = record.get("image")
    if isinstance(image, list):
        image = image[0] if image else None
    if image is None or image == "":
        return None
    return str(image).replace("\\", "/")


class LlavaReader(Reader):
    format = "llava"
    _CACHE_ATTRS = ("_entries",)

    def __init__(self, path, *, image_root: str | os.PathLike | None = None, shard_size: int = 1000,
                 on_duplicate_key: str = "error"):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"LLaVA file {self.path!r} does not exist")
        self.image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(self.path) or "."
        if not os.path.isdir(self.image_root):
            raise FileNotFoundError(f"image_root {self.image_root!r} is not a directory")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        self.shard_size = shard_size
        KeyRegistry(on_duplicate_key, "")  # validates the policy
        self.on_duplicate_key = on_duplicate_key
        self._entries: list[tuple[str, str | None, str | None, str]] | None = None
        self._load()   # parse now: a malformed file fails when the reader is opened, not mid-run

    def _records(self) -> Iterator[dict]:
        if self.path.lower().endswith((".jsonl", ".ndjson")):
            with open(self.path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise ValueError(f"{self.path}:{lineno}: invalid JSON ({exc.msg})") from None
            return
        with open(self.path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
        if not isinstance(data, list):
            raise ValueError(f"{self.path}: expected a JSON list of entries, got {type(data).__name__}")
        yield from data

    def _load(self) -> list[tuple[str, str | None, str | None, str]]:
        if self._entries is None:
            keys = KeyRegistry(self.on_duplicate_key, f"LLaVA file {self.path!r}")
            entries = []
            for index, record in enumerate(self._records()):
                if not isinstance(record, dict):
                    raise ValueError(f"{self.path}: entry {index} is a {type(record).__name__}, not an object")
                image = _image_path(record)
                if record.get("id") not in (None, ""):
                    key = str(record["id"])
                elif image is not None:
                    key = image.rsplit(".", 1)[0] if "." in image.rsplit("/", 1)[-1] else image
                else:
                    key = f"entry_{index}"
                key = keys.claim(key, f"entry {index}")
                entries.append((key, image, _first_answer(record),
                                json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
            self._entries = entries
        return self._entries

    def shards(self) -> list[str]:
        n = len(self._load())
        n_shards = -(-n // self.shard_size)
        width = max(5, len(str(max(n_shards - 1, 0))))
        return [f"{self.path}@{i:0{width}d}" for i in range(n_shards)]

    def _shard_range(self, shard: str) -> tuple[int, int]:
        n = len(self._load())
        path, at, index = shard.rpartition("@")
        if not at or path != self.path or not index.isdigit() or int(index) * self.shard_size >= n:
            raise ValueError(f"unknown shard {shard!r} for LLaVA file {self.path!r} ({len(self.shards())} shards)")
        start = int(index) * self.shard_size
        return start, min(start + self.shard_size, n)

    def count(self, shard: str) -> int | None:
        start, stop = self._shard_range(shard)
        return stop - start

    def describe(self) -> dict:
        return {"format": self.format, "path": self.path, "shards": len(self.shards()),
                "samples": len(self._load()),
                "options": {"image_root": self.image_root, "shard_size": self.shard_size,
                            "on_duplicate_key": self.on_duplicate_key}}

    def read(self, shard: str, batch_size: int = 256,
             max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> Iterator[pa.Table]:
        start, stop = self._shard_range(shard)
        batcher = Batcher(batch_size, max_batch_bytes)
        for key, image_path, caption, meta in self._load()[start:stop]:
            image = image_ext = None
            if image_path is not None:
                name = image_path.rsplit("/", 1)[-1]
                image_ext = name.rsplit(".", 1)[1].lower() if "." in name else None
                try:
                    with open(os.path.join(self.image_root, image_path), "rb") as f:
                        image = f.read()
                except FileNotFoundError:
                    image = None
                if image is not None and (image_ext is None or image_ext not in IMAGE_EXTS):
                    image_ext = sniff_image_ext(image) or image_ext
            batch = batcher.add(key, shard, image, image_ext, caption, meta)
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch
