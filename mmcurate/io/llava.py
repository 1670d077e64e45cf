"""LLaVA-style instruction data: a JSON list (or JSONL) of
`{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}`
(LLaVA-1.5 mix665k, LLaVA-Pretrain 558k, ShareGPT4V, multi-image and interleaved entries, text-only entries).

One row per entry, the whole conversation kept:
- key: the entry's `id`; without one, the first image path without its extension; without either (a
  text-only entry with no id), `entry_<index>` — the only key tied to position, and said so here.
- image: the bytes of the entry's first image, `image_root / entry["image"]` (image_root defaults to the JSON
  file's directory). `image` may be a string or a list (multi-image entries): `image_paths` lists them all.
  The first image is the one the image stages check; every further one is read too (same rules below), and
  one that is missing is a `missing_image` reject of the read step (its detail names which).
- Text-only entries (no `image`, or null, "" or []) are valid samples: image and image_ext null,
  `has_image` false, and the image stages pass them untouched. An entry naming a first image file that does
  not exist has image null and `has_image` true: the integrity stage rejects it (`missing_image`).
- caption: the first answer (role gpt/assistant), for the caption stages; null if there is none.
- meta: the whole record as JSON, so the conversations reach the output unchanged except where a stage edits
  them (a stage that edits `turns` writes them back into this record: stages/conversation.py `set_turns`).
- The conversation columns (pipeline.schema.CONVERSATION_FIELDS; io/conversations.py derives them): `turns`
  (list<struct<role, text>>, roles normalised: human/user -> "human", gpt/assistant -> "gpt"), `n_turns`,
  `question` (the first human turn without <image>), `answer` (the first gpt turn), `image_paths`, `has_image`.
  A malformed conversation (not a list, a turn that is not an object or whose value is not a string) is read
  as it is: conversation_check rejects it with its reason.
- Only files inside image_root are read: an absolute path, `..` or a symlink that resolves outside it is a
  `path_outside_root` reject, never opened (`allow_outside_root=True` lifts this). Anything but a regular file
  (a directory, FIFO, device) is `not_a_file`, checked before opening; a file over max_image_bytes is
  `too_large` (never read past the limit); a NUL in the path is `bad_path`; another OSError (permissions,
  a symlink loop) is `unreadable`. An entry that is not a JSON object, or one nested deeper than
  keys.MAX_META_DEPTH, is `bad_meta`; a JSONL line that does not parse is `bad_meta` too (its key
  `line_<N>`), and so is an entry whose text holds an unpaired surrogate escape ("\\ud800": Python parses it, UTF-8
  and Arrow cannot hold it); an id that cannot be a key (`..`, control characters, a surrogate) is `bad_key`.
- Shards are fixed chunks of the entries in file order: `FILE@00000` covers entries [0, shard_size).

Opening the reader parses the whole file once (a malformed file fails then, not mid-run; repeated ids are found
then), once per process (a map task opens the reader again: it finds that pass's result in a module cache keyed
by the path, size and mtime), and what a task needs survives pickling, so a task never parses the whole file again:
- JSONL: the shards are byte ranges of the file (found by that pass), and a task reads and parses only its own
  lines. Keys are derived from each entry alone, except where the whole-file pass gave another (a repeat renamed
  `KEY~1` under on_duplicate_key="suffix", a substitute key already taken): those few are kept in the reader.
- A JSON list: parsed once per process (a module cache keyed by the path, size and mtime, which the pickled
  reader finds again), each entry kept as its compact JSON text (memory about the size of the file). Use JSONL
  for files too large for that.
A file that changed (size or mtime) since the reader was opened is an error when a shard is read.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    Batcher,
    Reader,
    check_byte_limit,
    check_flag,
    one_line,
)
from mmcurate.io.conversations import conversation_columns, image_paths, turns_from_record
from mmcurate.io.keys import IMAGE_EXTS, KeyRegistry, json_problem, sniff_image_ext
from mmcurate.pipeline.schema import CONVERSATION_SAMPLE_SCHEMA

_JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _is_unicode(text: str) -> bool:
    """Whether the text encodes as UTF-8 (no unpaired surrogate from a JSON escape such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Entry(NamedTuple):
    key: str
    images: tuple[str, ...]  # the record's image paths ('/'-separated), in order
    meta: str
    reason: str | None = None
    detail: str | None = None


class _Span(NamedTuple):
    """One JSONL shard: the bytes [start, stop) of the file, whose first entry is entry `index` on line `lineno`."""

    start: int
    stop: int
    index: int
    lineno: int


def _file_stat(path: str) -> tuple[int, int]:
    """(size, mtime): what says the file is the one the reader was opened on (the same on every node of a shared
    filesystem, unlike the inode number)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _cache_key(path: str, *options) -> tuple:
    """A module cache's key for a file: its path, size and mtime, and (valid in this process only) its inode and
    ctime, so a file rewritten within one mtime tick, or replaced, is not taken for the one cached."""
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_ctime_ns, *options)


def _jsonl_lines(f: Iterable[bytes], offset: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset, text) of each line of a binary file, as a text-mode file yields them: universal newlines
    ("\\n", "\\r\\n" or a lone "\\r" ends a line, the ending read as "\\n") and invalid UTF-8 replaced. Decoding
    line by line gives the same text as decoding the whole file: no UTF-8 sequence holds a "\\r" or "\\n" byte."""
    for raw in f:  # split at b"\n": a "\r\n" stays in one piece
        for part in raw.splitlines(keepends=True) if b"\r" in raw else (raw,):
            text = part.decode("utf-8", "replace")
            if text.endswith("\r\n"):
                text = text[:-2] + "\n"
            elif text.endswith("\r"):
                text = text[:-1] + "\n"
            yield offset, text
            offset += len(part)


def _parse_line(lineno: int, text: str) -> tuple[object, str | None]:
    """(record, None), or (None, why) for a JSONL line that cannot be an entry."""
    try:
        return json.loads(text), None
    except ValueError as exc:  # one bad line is one reject, not a failed run
        return None, f"line {lineno}: invalid JSON ({one_line(exc, 200)})"
    except RecursionError:
        return None, f"line {lineno}: JSON nested too deep to parse"


def _entry(index: int, record: object, why: str | None, *, meta: bool = True) -> tuple[_Entry, bool]:
    """(the entry as if it were alone in the file, whether its key is a substitute). A substitute key (a row
    standing for an unreadable entry or a bad key) is renamed `KEY~N` when taken, whatever the policy; a claimed
    one follows on_duplicate_key. meta=False: the key and images only (the reasons that do not touch the key are
    left out), for the pass that only finds the keys."""
    if why is None and not isinstance(record, dict):
        why = f"entry {index} is a {type(record).__name__}, not an object"
    if why is not None:
        return _Entry(f"entry_{index}", (), "{}", "bad_meta", why), True
    assert isinstance(record, dict)
    images = tuple(image_paths(record))
    image = images[0] if images else None
    if record.get("id") not in (None, ""):
        key = str(record["id"])
    elif image is not None:
        key = image.rsplit(".", 1)[0] if "." in image.rsplit("/", 1)[-1] else image
    else:
        key = f"entry_{index}"
    if not _is_unicode(key):
        return _Entry(f"entry_{index}", (), "{}", "bad_key", f"entry {index}: the id holds an unpaired surrogate"), True
    key, reason, detail = KeyRegistry("error", "").claim_or_reject(key, f"entry {index}")  # alone: never a repeat
    if reason is not None:
        return _Entry(key, (), "{}", reason, detail), True
    if not meta:
        return _Entry(key, images, "{}"), False
    problem = json_problem(record)  # stages walk the meta: no deeper than they can
    if problem:
        return _Entry(key, (), "{}", "bad_meta", f"entry {index}: {problem}"), False
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    if not _is_unicode(text):  # a "\\ud800" escape: Python reads it, Arrow and UTF-8 cannot hold it
        return _Entry(key, (), "{}", "bad_meta", f"entry {index}: text holds an unpaired surrogate"), False
    return _Entry(key, images, text), False


def _claim(keys: KeyRegistry, index: int, entry: _Entry, substitute: bool) -> str:
    """The entry's key in the whole file: its own, or `KEY~N` for a repeat (DuplicateKeyError under "error")."""
    return keys.substitute(entry.key) if substitute else keys.claim(entry.key, f"entry {index}")


#: A JSONL file's index (the whole-file pass), made once per process: {(path, size, mtime, inode, ..., shard_size,
#: on_duplicate_key): (spans, renamed keys, count)}, the last file only. A map task opens the reader again
#: (pipeline.executor.run_map_shard) and finds it here instead of parsing the file again.
_JSONL_INDEX: dict[tuple, tuple[list[_Span], dict[int, str], int]] = {}

#: A JSON list's entries, parsed once per process: {(path, size, mtime, inode, ..., on_duplicate_key): entries}, the
#: last file only. A pickled reader (a map task's) finds them here instead of parsing the file again.
_JSON_CACHE: dict[tuple, list[_Entry]] = {}


def _conversation(meta: str, images: tuple[str, ...]) -> tuple[str | None, dict]:
    """(caption, the conversation columns) of an entry's record."""
    turns = turns_from_record(json.loads(meta))
    n_turns, question, answer = conversation_columns(turns)
    extra = {
        "turns": turns,
        "n_turns": n_turns,
        "question": question,
        "answer": answer,
        "image_paths": list(images),
        "has_image": bool(images),
    }
    return answer, extra


class LlavaReader(Reader):
    format = "llava"
    schema = CONVERSATION_SAMPLE_SCHEMA
    _CACHE_ATTRS = ("_entries",)

    def __init__(
        self,
        path,
        *,
        image_root: str | os.PathLike | None = None,
        shard_size: int = 1000,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        allow_outside_root: bool = False,
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            if os.path.exists(self.path):  # a FIFO or device: reading it could block or never end
                raise ValueError(f"LLaVA file {self.path!r} is not a regular file; give a .json or .jsonl file")
            raise FileNotFoundError(f"LLaVA file {self.path!r} does not exist")
        self.image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(self.path) or "."
        if not os.path.isdir(self.image_root):
            raise FileNotFoundError(f"image_root {self.image_root!r} is not a directory")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        self.shard_size = shard_size
        KeyRegistry(on_duplicate_key, "")  # validates the policy
        self.on_duplicate_key = on_duplicate_key
        self.max_image_bytes = check_byte_limit("max_image_bytes", max_image_bytes)
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self._jsonl = self.path.lower().endswith(_JSONL_SUFFIXES)
        self._entries: list[_Entry] | None = None
        self._spans: list[_Span] = []  # JSONL: the shards' byte ranges
        self._keys: dict[int, str] = {}  # JSONL: {entry index: its key} where the whole file renamed it
        # parse now: a malformed file or a repeated id fails when the reader is opened, not mid-run
        self._stat = _file_stat(self.path)
        self._n = self._index_jsonl() if self._jsonl else len(self._load())

    def _check_unchanged(self) -> None:
        if _file_stat(self.path) != self._stat:
            raise ValueError(
                f"LLaVA file {self.path!r} changed since the reader was opened (size or mtime); open it again"
            )

    def _index_jsonl(self) -> int:
        """The shards' byte ranges and the renamed keys of a JSONL file, found once per process; the count."""
        cache_key = _cache_key(self.path, self.shard_size, self.on_duplicate_key)
        index = _JSONL_INDEX.get(cache_key)
        if index is None:
            index = self._scan_jsonl()
            _JSONL_INDEX.clear()
            _JSONL_INDEX[cache_key] = index
        self._spans, self._keys, n = index
        return n

    def _scan_jsonl(self) -> tuple[list[_Span], dict[int, str], int]:
        """The whole-file pass over a JSONL file: every line parsed once, for the keys and where the shards start."""
        renamed: dict[int, str] = {}
        keys = KeyRegistry(self.on_duplicate_key, f"LLaVA file {self.path!r}")
        firsts: list[tuple[int, int, int]] = []
        index = 0
        with open(self.path, "rb") as f:
            for lineno, (offset, text) in enumerate(_jsonl_lines(f), 1):
                if not text.strip():
                    continue
                if index % self.shard_size == 0:
                    firsts.append((offset, index, lineno))
                entry, substitute = _entry(index, *_parse_line(lineno, text), meta=False)
                key = _claim(keys, index, entry, substitute)
                if key != entry.key:
                    renamed[index] = key
                index += 1
        self._check_unchanged()
        stops = [start for start, _, _ in firsts[1:]] + [self._stat[0]]
        return [_Span(start, stop, i, ln) for (start, i, ln), stop in zip(firsts, stops)], renamed, index

    def _jsonl_entries(self, span: _Span) -> Iterator[_Entry]:
        """A JSONL shard's entries: its own bytes read and parsed, nothing else."""
        with open(self.path, "rb") as f:
            f.seek(span.start)
            data = f.read(span.stop - span.start)
        index = span.index
        for lineno, (_, text) in enumerate(_jsonl_lines(io.BytesIO(data)), span.lineno):
            if not text.strip():
                continue
            entry, _ = _entry(index, *_parse_line(lineno, text))
            key = self._keys.get(index)
            yield entry if key is None else entry._replace(key=key)
            index += 1

    def _records(self) -> Iterator[object]:
        """A JSON list's records."""
        with open(self.path, encoding="utf-8", errors="replace") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
            except RecursionError:
                raise ValueError(
                    f"{self.path}: JSON nested too deep to parse; fix the file or write it as JSONL "
                    f"(one entry per line), where such an entry is one reject"
                ) from None
        if not isinstance(data, list):
            raise ValueError(f"{self.path}: expected a JSON list of entries, got {type(data).__name__}")
        yield from data

    def _load(self) -> list[_Entry]:
        """A JSON list's entries, parsed once per process."""
        if self._entries is None:
            cache_key = _cache_key(self.path, self.on_duplicate_key)
            entries = _JSON_CACHE.get(cache_key)
            if entries is None:
                keys = KeyRegistry(self.on_duplicate_key, f"LLaVA file {self.path!r}")
                entries = []
                for index, record in enumerate(self._records()):
                    entry, substitute = _entry(index, record, None)
                    entries.append(entry._replace(key=_claim(keys, index, entry, substitute)))
                self._check_unchanged()
                _JSON_CACHE.clear()
                _JSON_CACHE[cache_key] = entries
            self._entries = entries
        return self._entries

    def shards(self) -> list[str]:
        n_shards = -(-self._n // self.shard_size)
        width = max(5, len(str(max(n_shards - 1, 0))))
        return [f"{self.path}@{i:0{width}d}" for i in range(n_shards)]

    def _shard_index(self, shard: str) -> int:
        path, at, index = shard.rpartition("@")
        if not at or path != self.path or not index.isdigit() or int(index) * self.shard_size >= self._n:
            raise ValueError(f"unknown shard {shard!r} for LLaVA file {self.path!r} ({len(self.shards())} shards)")
        return int(index)

    def count(self, shard: str) -> int | None:
        start = self._shard_index(shard) * self.shard_size
        return min(self.shard_size, self._n - start)

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "shards": len(self.shards()),
            "samples": self._n,
            "options": {
                "image_root": self.image_root,
                "shard_size": self.shard_size,
                "on_duplicate_key": self.on_duplicate_key,
                "max_image_bytes": self.max_image_bytes,
                "allow_outside_root": self.allow_outside_root,
            },
        }

    def _shard_entries(self, shard: str) -> Iterator[_Entry]:
        i = self._shard_index(shard)
        self._check_unchanged()
        if self._jsonl:
            return self._jsonl_entries(self._spans[i])
        start = i * self.shard_size
        return iter(self._load()[start : start + self.shard_size])

    def start_notes(self) -> list[str]:
        """Images the first records name but image_root does not hold (image_root the usual fix), found by a
        stat of at most the first 100 records' first image."""
        shards = self.shards()
        if not shards:
            return []
        named = missing = 0
        example = None
        for _key, images, _meta, reason, _detail in self._shard_entries(shards[0]):
            if named >= 100:
                break
            if not images or reason is not None:
                continue
            named += 1
            if not os.path.isfile(os.path.join(self.image_root, images[0])):
                missing += 1
                example = example or images[0]
        if not missing:
            return []
        return [
            f"{missing} of the first {named} records name an image not found under image_root {self.image_root!r} "
            f"(e.g. {example!r}): set input.options.image_root to the folder the image paths are relative to"
        ]

    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        entries = self._shard_entries(shard)
        batcher = Batcher(batch_size, max_batch_bytes, self.schema)
        root_real = os.path.realpath(self.image_root)
        for key, images, meta, reason, detail in entries:
            image = image_ext = None
            if images and reason is None:
                name = images[0].rsplit("/", 1)[-1]
                image_ext = name.rsplit(".", 1)[1].lower() if "." in name else None
                image, reason, detail = self._read_image(root_real, key, images, 0)
                if image is not None and (image_ext is None or image_ext not in IMAGE_EXTS):
                    image_ext = sniff_image_ext(image) or image_ext
                for i in range(1, len(images) if reason is None else 0):
                    data, reason, detail = self._read_image(root_real, key, images, i)
                    if reason is None and data is None:
                        reason = "missing_image"
                        detail = (
                            f"entry {key!r}: image {i + 1} of {len(images)} {images[i]!r} not found under image_root"
                        )
                    if reason is not None:
                        break
            if reason is not None:
                batch = batcher.add_reject(key, shard, reason, detail, image_ext)
            else:
                caption, extra = _conversation(meta, images)
                batch = batcher.add(key, shard, image, image_ext, caption, meta, extra=extra)
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def _read_image(self, root_real: str, key: str, images: tuple[str, ...], i: int):
        """(bytes or None when the file does not exist, reason, detail) of the entry's i-th image."""
        data, reason, detail = paths.read_inside_root(
            root_real, images[i], self.max_image_bytes, self.allow_outside_root
        )
        which = "image" if len(images) == 1 else f"image {i + 1} of {len(images)}"
        return data, reason, detail and f"entry {key!r}: {which} {detail}"
