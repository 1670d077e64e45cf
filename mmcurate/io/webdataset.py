"""WebDataset tar shards as img2dataset writes them: `KEY.jpg|png|webp|...` + `KEY.txt` + `KEY.json`.

Members are streamed (`tarfile` mode `r|*`, plain or gzip/bz2/xz): one sample in memory at a time,
never the whole shard. Members are grouped into samples by WebDataset's rule (consecutive members
with the same key; the key is the member path up to the first dot of its file name, directories
included), and keys written escaped by our ShardWriter are unescaped (see mmcurate.io.keys).

Per sample: the first image member (by IMAGE_EXTS) is the image, `.txt` the caption (UTF-8; invalid
bytes become U+FFFD), `.json` the meta (see keys.normalize_meta for invalid JSON). Other members
(`.cls`, a second image, ...) are ignored and never read. A sample without an image is still a row, with
image null; a sample without a caption has caption null. Members that are not regular files (directories,
links), members without a suffix (`README`) and `__meta__`-style members are skipped, as webdataset does;
a shard holding members but no sample at all gives one `shard_unrecognised` row (below).

Hostile or damaged input never raises; it becomes a row with `read_reason` set (see io.base):
- `too_large`: an image member over max_image_bytes, or a caption/meta member over max_member_bytes
  (skipped in the stream from its header's size, never read into memory);
- `bad_key`: a key that cannot name tar members (`..`, a leading '/', control characters, not UTF-8), kept
  in the detail with repr; the row gets a substitute key `__bad_key__<hash>`;
- `bad_meta`: a `.json` member nested deeper than keys.MAX_META_DEPTH;
- `shard_unreadable` / `shard_truncated` (io.base.SHARD_ERROR_REASONS): the shard cannot be opened, is not
  a tar, has a bad compressed stream or ends mid-member. The samples read before the damage are yielded
  as usual, then one row stands for the damage: the sample whose member broke (its key), or `__shard_error__`
  when the damage is in a header, and the shard ends there.

Duplicate keys: within a shard, a key that comes back after other samples, or a member suffix that
repeats inside one sample (webdataset itself raises there), is a DuplicateKeyError by default, or is
kept as `KEY~N` with on_duplicate_key="suffix". Keys repeated across shards are not detected here
(that needs every key of the run; the executor can check it).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from mmcurate.io import paths
from mmcurate.io.base import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_MEMBER_BYTES,
    Batcher,
    Reader,
    check_byte_limit,
)
from mmcurate.io.keys import (
    IMAGE_EXTS,
    KeyRegistry,
    check_meta,
    loads_untrusted,
    member_base_to_key,
    short_repr,
    split_member_name,
)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# webdataset skips members named like `__meta__` (tariterators.tar_file_iterator's skip_meta).
_SKIP_META = re.compile(r"__[^/]*__($|/)")


class ShardReadError(IOError):
    """A shard could not be read to its end (kept for callers that raise it; readers yield a row instead)."""


SHARD_ERROR_KEY = "__shard_error__"


@dataclass
class Sample:
    """One sample as read from a shard: `fields` holds the members read ({suffix: bytes}); a sample with
    `reason` set is a reject row (reason, one-line detail) and carries no fields."""

    key: str
    raw: str | None = None
    fields: dict = field(default_factory=dict)
    suffixes: set = field(default_factory=set)
    reason: str | None = None
    detail: str | None = None

    def reject(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        self.fields = {}


class WebDatasetReader(Reader):
    format = "webdataset"

    def __init__(
        self,
        path,
        *,
        caption_ext: str = "txt",
        meta_ext: str = "json",
        image_exts: tuple[str, ...] = IMAGE_EXTS,
        on_duplicate_key: str = "error",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ):
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
        self.caption_ext = caption_ext.lower().lstrip(".")
        self.meta_ext = meta_ext.lower().lstrip(".")
        self.image_exts = tuple(e.lower().lstrip(".") for e in image_exts)
        KeyRegistry(on_duplicate_key, "")  # validates the policy now, not at the first read
        self.on_duplicate_key = on_duplicate_key
        self.max_image_bytes = check_byte_limit("max_image_bytes", max_image_bytes)
        self.max_member_bytes = check_byte_limit("max_member_bytes", max_member_bytes)
        self._shards = paths.list_files(self.path, TAR_SUFFIXES)

    def shards(self) -> list[str]:
        return list(self._shards)

    def count(self, shard: str) -> int | None:
        # img2dataset writes NNNNN_stats.json next to NNNNN.tar; "successes" is the number of samples in it.
        if paths.is_url(shard):
            return None
        stem = shard
        for suffix in TAR_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        try:
            n = loads_untrusted(paths.read_bounded(stem + "_stats.json", 1 << 20).decode("utf-8")).get("successes")
        except (OSError, ValueError, AttributeError):
            return None
        return n if isinstance(n, int) and n >= 0 else None

    def describe(self) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "shards": len(self._shards),
            "options": {
                "caption_ext": self.caption_ext,
                "meta_ext": self.meta_ext,
                "image_exts": list(self.image_exts),
                "on_duplicate_key": self.on_duplicate_key,
                "max_image_bytes": self.max_image_bytes,
                "max_member_bytes": self.max_member_bytes,
            },
        }

    def start_notes(self) -> list[str]:
        """Captions or images missing from the whole first batch of the first shard: a caption under another
        extension (`.caption`, `.text`) is the usual cause, and caption_ext / image_exts the fix."""
        if not self._shards:
            return []
        first = next(iter(self.read(self._shards[0], batch_size=64)), None)
        if first is None or first.num_rows == 0:
            return []
        n, where = first.num_rows, self._shards[0]
        notes = []
        if first.column("caption").null_count == n:
            notes.append(
                f"the first {n} samples of {where!r} have no caption (.{self.caption_ext} member): set "
                f"input.options.caption_ext to the extension your captions use (e.g. caption_ext: caption)"
            )
        if first.column("image").null_count == n and first.column("read_reason").null_count == n:
            notes.append(
                f"the first {n} samples of {where!r} have no image member ({', '.join(self.image_exts)}): set "
                f"input.options.image_exts to the extensions your images use"
            )
        return notes

    def read(
        self, shard: str, batch_size: int = 256, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    ) -> Iterator[pa.Table]:
        batcher = Batcher(batch_size, max_batch_bytes)
        for sample in self.iter_samples(shard):
            fields = sample.fields
            image_ext = next((s for s in fields if s in self.image_exts), None)
            if sample.reason is not None:
                batch = batcher.add_reject(sample.key, shard, sample.reason, sample.detail, image_ext)
            else:
                caption = fields.get(self.caption_ext)
                meta, reason, detail = check_meta(
                    fields[self.meta_ext].decode("utf-8", errors="replace") if self.meta_ext in fields else None
                )
                if reason is not None:
                    batch = batcher.add_reject(sample.key, shard, reason, f"member {self.meta_ext!r}: {detail}")
                else:
                    batch = batcher.add(
                        sample.key,
                        shard,
                        fields[image_ext] if image_ext else None,
                        image_ext,
                        caption.decode("utf-8", errors="replace") if caption is not None else None,
                        meta,
                    )
            if batch is not None:
                yield batch
        batch = batcher.flush()
        if batch is not None:
            yield batch

    def iter_samples(self, shard: str) -> Iterator[Sample]:
        """The shard's samples in tar order (suffixes in member order); never raises on bad input: the
        damage becomes the last Sample, with reason in SHARD_ERROR_REASONS."""
        keys = KeyRegistry(self.on_duplicate_key, f"shard {shard!r}")
        wanted = {*self.image_exts, self.caption_ext, self.meta_ext}
        cur: Sample | None = None
        n_yielded = n_members = 0
        member_name = None

        def damage(exc: BaseException, broken: Sample | None) -> Sample:
            reason = "shard_truncated" if n_members else "shard_unreadable"
            where = f" at member {short_repr(member_name)}" if member_name is not None else ""
            detail = f"shard {shard!r}: unreadable{where} after {n_yielded} samples: {type(exc).__name__}: {exc}"
            row = broken if broken is not None and broken.reason is None else Sample(keys.substitute(SHARD_ERROR_KEY))
            row.reject(reason, detail)
            return row

        try:
            f = paths.open_binary(shard)
        except OSError as exc:
            yield damage(exc, None)
            return
        with f:
            try:
                tar = tarfile.open(fileobj=f, mode="r|*", tarinfo=_CheckedTarInfo)
            except Exception as exc:  # noqa: BLE001 - whatever tarfile raises on hostile bytes ends the shard
                yield damage(exc, None)
                return
            members = iter(tar)
            last_in_cur = False  # whether the member before the next header belongs to `cur`
            while True:
                try:
                    member = next(members)
                    exc = None
                except StopIteration:
                    exc = getattr(tar, _BAD_END, None)
                    if exc is None:
                        break
                except Exception as err:  # noqa: BLE001 - a bad header or stream: what came before is whole
                    exc = err
                if exc is not None:
                    # Cut inside the data of the member before (skipped unread): that member's sample broke.
                    if cur is not None and cur.reason is None and last_in_cur and _ended_in_data(tar):
                        yield damage(exc, cur)
                        return
                    if cur is not None:
                        yield cur
                        n_yielded += 1
                    yield damage(exc, None)
                    return
                n_members += 1
                member_name = member.name
                last_in_cur = False
                if not member.isreg() or _SKIP_META.match(member.name):
                    continue
                raw, suffix = split_member_name(member.name)
                if raw is None:
                    continue
                if cur is None or raw != cur.raw or suffix in cur.suffixes:
                    if cur is not None:
                        yield cur
                        n_yielded += 1
                    detail = f"member {short_repr(member.name)}" + (
                        " repeats a suffix of the sample before it" if cur is not None and raw == cur.raw else ""
                    )
                    key, reason, why = keys.claim_or_reject(member_base_to_key(raw), detail)
                    cur = Sample(key, raw=raw)
                    if reason is not None:
                        cur.reject(reason, why)
                cur.suffixes.add(suffix)
                last_in_cur = True
                if (
                    cur.reason is not None
                    or suffix not in wanted
                    or (suffix in self.image_exts and any(s in self.image_exts for s in cur.fields))
                ):
                    continue  # unread: the stream skips its data
                is_image = suffix in self.image_exts
                cap = self.max_image_bytes if is_image else self.max_member_bytes
                if member.size > cap:
                    cur.reject(
                        "too_large",
                        f"member {short_repr(member.name)} is {member.size:,} bytes (limit "
                        f"{'max_image_bytes' if is_image else 'max_member_bytes'}={cap:,})",
                    )
                    continue
                try:
                    data = tar.extractfile(member).read()
                except Exception as err:  # noqa: BLE001 - the data ends or is corrupt: this sample broke
                    yield damage(err, cur)
                    return
                cur.fields[suffix] = data
            if cur is not None:
                yield cur
            elif n_members:
                row = Sample(keys.substitute(SHARD_ERROR_KEY))
                row.reject(
                    "shard_unrecognised",
                    f"shard {shard!r}: {n_members} members but no sample: no member "
                    f"is a regular file named KEY.SUFFIX (e.g. {short_repr(member_name)}); expected "
                    f"WebDataset members like 000001.jpg, 000001.txt",
                )
                yield row


def _ended_in_data(tar: tarfile.TarFile) -> bool:
    """Whether the stream stopped before the next header's offset, i.e. inside the last member's data."""
    pos = getattr(tar.fileobj, "pos", None)
    return pos is not None and pos < tar.offset


_BAD_END = "_mmcurate_bad_end"


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile ends a stream quietly where a header after the first is cut short, empty or fails its checksum,
    so a truncated or corrupt shard would read as complete. A whole tar ends with a zero block
    (EOFHeaderError): any other header error that ends the iteration is recorded on the TarFile."""

    @classmethod
    def fromtarfile(cls, tarfile_):
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as exc:
            pos = getattr(tarfile_.fileobj, "pos", None)
            where = f"at byte {pos:,}" if pos is not None else ""
            setattr(tarfile_, _BAD_END, tarfile.ReadError(f"no end-of-archive block: {exc} {where}".strip()))
            raise
