"""Thumbnails for the report, collected while the pipeline runs.

The executor keeps no image bytes of rejected samples, so it hands each batch's rejects (with their
bytes) to a :class:`ThumbnailCollector`, which keeps a few small JPEG thumbnails per (stage, reason).
For duplicate groups it asks, once the global steps know the groups, for the images of the few groups
it will show (:meth:`ThumbnailCollector.wanted_keys`), and the executor's second pass over the input
offers them (:meth:`ThumbnailCollector.offer_group_members`). :meth:`ThumbnailCollector.write` stores
everything in ``thumbs.parquet`` (:data:`THUMBS_SCHEMA`), which the report reads.

Selection is by key, never by arrival order: each (stage, reason) keeps the ``max_per_reason``
smallest keys offered. Batches may therefore arrive in any order, from any number of workers
(:meth:`ThumbnailCollector.merge`), or across a resumed run (:meth:`ThumbnailCollector.read`), and the
thumbnails are the same.

A bad image never raises: it becomes a placeholder tile that says "undecodable" and why.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmcurate.pipeline.params import check_int

__all__ = ["THUMBS_SCHEMA", "Thumbnail", "ThumbnailCollector", "display_text", "make_thumbnails", "placeholder_tile"]

THUMBS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # "reject" | "duplicate"
        pa.field("stage", pa.string()),  # rejecting stage (null for duplicate-group tiles)
        pa.field("reason", pa.string()),  # reject reason, or the duplicate kind ("exact", "phash")
        pa.field("group", pa.string()),  # duplicate group's representative key (null for rejects)
        pa.field("distance", pa.float64()),  # member's distance (null for the representative, rejects)
        pa.field("decoded", pa.bool_(), nullable=False),  # False: jpeg is a placeholder tile
        pa.field("note", pa.string()),  # why a placeholder was drawn ("corrupt", "no image", ...)
        pa.field("caption", pa.string()),  # the caption, PII redacted, shortened (null if not offered)
        pa.field("jpeg", pa.binary(), nullable=False),  # the thumbnail, JPEG
    ]
)

#: Captions stored with a thumbnail are cut to this length (the report shows a line or two).
MAX_CAPTION_CHARS = 300
KIND_REJECT = "reject"
KIND_DUPLICATE = "duplicate"
# Near duplicates are what a person should look at when tuning a threshold; exact copies are obvious.
DUPLICATE_KIND_ORDER = {"phash": 0, "pdq": 1, "semantic": 2, "exact": 3}


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    decoded: bool  # False when jpeg is a placeholder tile
    note: str = ""  # the decoder's status for a placeholder
    caption: str | None = None

    def with_caption(self, caption: str | None) -> Thumbnail:
        return Thumbnail(self.jpeg, self.decoded, self.note, display_text(caption, MAX_CAPTION_CHARS))


# Room past the cut for the longest value a detector matches, so that a value straddling the cut is
# still recognised whole (and then falls off the cut, redacted).
_REDACT_MARGIN = 512


def display_text(text: str | None, limit: int = MAX_CAPTION_CHARS) -> str | None:
    """Text as the report shows it: personal data redacted (always: the thumbnails come from the raw
    input, rejected samples included, whether or not the recipe redacts) and cut to `limit` characters.
    Only the first `limit` + 512 characters are looked at, so the work is bounded whatever the text."""
    if text is None:
        return None
    from mmcurate.curate.pii import Redactor

    head = text[: limit + _REDACT_MARGIN]
    head = Redactor().redact(head)[0]
    if len(head) > limit or len(text) > limit + _REDACT_MARGIN:
        head = head[: limit - 1] + "…"
    return head


def _encode_jpeg(img, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


_PLACEHOLDERS: dict[tuple[int, str, str], bytes] = {}


def placeholder_tile(size: int, note: str = "", title: str = "undecodable", quality: int = 80) -> bytes:
    """A gray size x size JPEG tile with `title` and `note` written on it (cached: tiles repeat)."""
    cache_key = (size, title, note)
    if cache_key in _PLACEHOLDERS:
        return _PLACEHOLDERS[cache_key]
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (size, size), (233, 236, 239))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(9, size // 9))
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    # A crossed frame reads as "no picture" at a glance, before the text is read.
    pad = max(2, size // 10)
    draw.rectangle((pad, pad, size - pad - 1, size - pad - 1), outline=(173, 181, 189), width=max(1, size // 64))
    draw.line((pad, pad, size - pad - 1, size - pad - 1), fill=(206, 212, 218), width=max(1, size // 64))
    draw.line((pad, size - pad - 1, size - pad - 1, pad), fill=(206, 212, 218), width=max(1, size // 64))
    lines = [title] + ([note] if note else [])
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    heights = [b[3] - b[1] for b in boxes]
    gap = max(2, size // 32)
    y = (size - (sum(heights) + gap * (len(lines) - 1))) // 2
    for line, box, h in zip(lines, boxes, heights):
        w = box[2] - box[0]
        x = (size - w) // 2
        draw.rectangle((x - 3, y - 2 + box[1], x + w + 3, y + box[1] + h + 2), fill=(233, 236, 239))
        draw.text((x, y), line, fill=(73, 80, 87), font=font)
        y += h + gap
    data = _encode_jpeg(img, quality)
    _PLACEHOLDERS[cache_key] = data
    return data


def _fit(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) scaled to fit a size x size box, aspect kept, never enlarged, at least 1 pixel a side."""
    scale = min(1.0, size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def make_thumbnails(blobs: list, size: int = 128, quality: int = 80) -> list[Thumbnail]:
    """Encoded images -> JPEG thumbnails that fit a size x size box (aspect kept, EXIF orientation applied).

    Decoding uses the native decoder (JPEGs decode in the DCT domain near the target size, and
    decompression bombs are refused from the header); any sample that fails becomes a placeholder."""
    from PIL import Image

    from mmcurate.ops import Status, decode_images, resize_images
    from mmcurate.ops.status import status_name

    blobs = [b if b else None for b in blobs]
    try:
        result = decode_images(blobs, mode="RGB", device="cpu", target_size=size)
    except Exception as exc:  # noqa: BLE001 - defensive: a thumbnail must never fail a run
        return [Thumbnail(placeholder_tile(size, type(exc).__name__, quality=quality), False, "error")] * len(blobs)
    out: list[Thumbnail] = []
    for img, status, (src_h, src_w), orientation in zip(
        result.images, result.status, result.source_sizes, result.orientation
    ):
        if img is None or int(status) != Status.ok:
            note = status_name(status, default="error")
            out.append(Thumbnail(placeholder_tile(size, note.replace("_", " "), quality=quality), False, note))
            continue
        try:
            h, w = img.shape[:2]
            # The aspect comes from the stored size: a JPEG decoded at a reduced DCT scale has rounded sides.
            if src_h > 0 and src_w > 0:
                src_h, src_w = (src_w, src_h) if int(orientation) >= 5 else (src_h, src_w)
                th, tw = _fit(int(src_h), int(src_w), size)
                th, tw = min(th, h), min(tw, w)
            else:
                th, tw = _fit(h, w, size)
            if (th, tw) != (h, w):
                img = resize_images([img], (th, tw), interpolation="bicubic", mode="squash", device="cpu")[0]
            out.append(Thumbnail(_encode_jpeg(Image.fromarray(img), quality), True))
        except Exception as exc:  # noqa: BLE001 - defensive, as above
            out.append(Thumbnail(placeholder_tile(size, type(exc).__name__, quality=quality), False, "error"))
    return out


@dataclass
class DuplicateGroup:
    """One duplicate group chosen for the gallery: the representative and the members shown."""

    kind: str
    representative: str
    members: list[tuple[str, float | None]]  # (key, distance), at most max_per_group - 1
    size: int  # all members of the group, shown or not


@dataclass
class _Bucket:
    """The thumbnails of one (stage, reason): the `limit` smallest keys offered."""

    limit: int
    thumbs: dict[str, Thumbnail] = field(default_factory=dict)

    def would_take(self, key: str) -> bool:
        if key in self.thumbs:
            return False
        return len(self.thumbs) < self.limit or key < max(self.thumbs)

    def add(self, key: str, thumb: Thumbnail) -> None:
        self.thumbs[key] = thumb
        while len(self.thumbs) > self.limit:
            del self.thumbs[max(self.thumbs)]


def _column(table: pa.Table, name: str) -> list:
    if name not in table.column_names:
        raise ValueError(f"table must have a {name!r} column; it has {table.column_names}")
    return table.column(name).to_pylist()


class ThumbnailCollector:
    """Keeps a bounded, deterministic set of thumbnails of rejected samples and duplicate groups.

    Args:
        max_per_reason: thumbnails per (stage, reason) of the rejects log (the smallest keys).
        max_groups: duplicate groups shown in the gallery.
        max_per_group: tiles per duplicate group, the representative included.
        size: thumbnails fit a size x size box.
        quality: JPEG quality of the thumbnails.

    Memory is bounded by the limits (a 128-pixel thumbnail is a few kB), not by the dataset. The
    collector is picklable, and two collectors that saw different parts of a run :meth:`merge`.
    """

    def __init__(
        self, max_per_reason: int = 8, max_groups: int = 12, max_per_group: int = 6, size: int = 128, quality: int = 80
    ):
        for name, value, low, high in (
            ("max_per_reason", max_per_reason, 0, None),
            ("max_groups", max_groups, 0, None),
            ("max_per_group", max_per_group, 1, None),
            ("size", size, 8, None),
            ("quality", quality, 1, 95),
        ):
            check_int(f"ThumbnailCollector: {name}", value, low, high)
        self.max_per_reason = max_per_reason
        self.max_groups = max_groups
        self.max_per_group = max_per_group
        self.size = size
        self.quality = quality
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._groups: list[DuplicateGroup] = []
        self._group_thumbs: dict[str, Thumbnail] = {}

    # -- rejected samples ---------------------------------------------------------------------------
    def offer_rejects(
        self,
        rejects: pa.Table,
        images_by_key: Mapping[str, bytes | None],
        captions_by_key: Mapping[str, str | None] | None = None,
    ) -> int:
        """Offer one batch's rejects (REJECTS_SCHEMA columns key, stage, reason) and their image bytes,
        optionally with their captions (shown under the thumbnails; text stages reject for the caption).

        Rows whose key is not in `images_by_key` are skipped (e.g. global-stage rejects, whose bytes are
        not at hand; their pictures come through the duplicate groups). A key mapped to None or b""
        gets an "empty" placeholder. Returns how many thumbnails were taken."""
        if rejects.num_rows == 0 or self.max_per_reason == 0:
            return 0
        keys, stages, reasons = _column(rejects, "key"), _column(rejects, "stage"), _column(rejects, "reason")
        # Pick the candidates first, so only images that can enter a bucket are decoded.
        candidates: dict[tuple[str, str], list[str]] = {}
        for key, stage, reason in zip(keys, stages, reasons):
            if key not in images_by_key:
                continue
            bucket_id = (stage, reason)
            bucket = self._buckets.setdefault(bucket_id, _Bucket(self.max_per_reason))
            if bucket.would_take(key):
                candidates.setdefault(bucket_id, []).append(key)
        todo = [
            (bucket_id, key) for bucket_id, ks in candidates.items() for key in sorted(set(ks))[: self.max_per_reason]
        ]
        if not todo:
            return 0
        thumbs = make_thumbnails([images_by_key[key] for _, key in todo], self.size, self.quality)
        taken = 0
        for (bucket_id, key), thumb in zip(todo, thumbs):
            bucket = self._buckets[bucket_id]
            if bucket.would_take(key):
                caption = captions_by_key.get(key) if captions_by_key is not None else None
                bucket.add(key, thumb.with_caption(caption))
                taken += 1
        return taken

    # -- duplicate groups -----------------------------------------------------------------------------
    def wanted_keys(self, duplicates: pa.Table) -> set[str]:
        """Choose the duplicate groups to show and return the keys whose images are needed.

        `duplicates` has DUPLICATES_SCHEMA's columns key, duplicate_of, kind, distance. Groups are
        chosen deterministically: kinds take turns (near duplicates first), larger groups first, then
        by representative key; members with the largest distance are shown (the ones worth checking)."""
        keys, reps, kinds = _column(duplicates, "key"), _column(duplicates, "duplicate_of"), _column(duplicates, "kind")
        distances = (
            duplicates.column("distance").to_pylist() if "distance" in duplicates.column_names else [None] * len(keys)
        )
        members: dict[tuple[str, str], list[tuple[str, float | None]]] = {}
        for key, rep, kind, dist in zip(keys, reps, kinds, distances):
            members.setdefault((kind, rep), []).append((key, dist))
        by_kind: dict[str, list[tuple[str, str]]] = {}
        for group_id in members:
            by_kind.setdefault(group_id[0], []).append(group_id)
        for ids in by_kind.values():
            ids.sort(key=lambda g: (-len(members[g]), g[1]))
        kind_order = sorted(by_kind, key=lambda k: (DUPLICATE_KIND_ORDER.get(k, len(DUPLICATE_KIND_ORDER)), k))
        chosen: list[tuple[str, str]] = []
        rank = 0
        while len(chosen) < self.max_groups and any(rank < len(by_kind[k]) for k in kind_order):
            for kind in kind_order:
                if rank < len(by_kind[kind]) and len(chosen) < self.max_groups:
                    chosen.append(by_kind[kind][rank])
            rank += 1
        self._groups = []
        for kind, rep in chosen:
            ms = sorted(members[(kind, rep)], key=lambda m: (-(m[1] if m[1] is not None else 0.0), m[0]))
            self._groups.append(DuplicateGroup(kind, rep, ms[: self.max_per_group - 1], len(ms)))
        return self._wanted()

    def _wanted(self) -> set[str]:
        return {k for g in self._groups for k in [g.representative, *(m for m, _ in g.members)]}

    @property
    def groups(self) -> list[DuplicateGroup]:
        """The groups chosen by the last :meth:`wanted_keys` call."""
        return list(self._groups)

    def offer_group_members(self, keys_needed: Iterable[str], table: pa.Table) -> int:
        """Offer a batch (columns key and image, optionally caption) of the second pass; the rows in
        `keys_needed` that the chosen groups show become thumbnails. Returns how many were taken."""
        needed = set(keys_needed) & self._wanted()
        if not needed or table.num_rows == 0:
            return 0
        keys, images = _column(table, "key"), table.column("image") if "image" in table.column_names else None
        if images is None:
            raise ValueError(f"table must have an 'image' column; it has {table.column_names}")
        rows = [i for i, k in enumerate(keys) if k in needed and k not in self._group_thumbs]
        if not rows:
            return 0
        blobs = [images[i].as_py() for i in rows]
        captions = table.column("caption") if "caption" in table.column_names else None
        for i, thumb in zip(rows, make_thumbnails(blobs, self.size, self.quality)):
            self._group_thumbs[keys[i]] = thumb.with_caption(captions[i].as_py() if captions is not None else None)
        return len(rows)

    # -- combining and storing ------------------------------------------------------------------------
    def merge(self, other: ThumbnailCollector) -> ThumbnailCollector:
        """Fold another collector's thumbnails into this one (same limits); the result does not depend on
        the order of merging."""
        for bucket_id, bucket in other._buckets.items():
            mine = self._buckets.setdefault(bucket_id, _Bucket(self.max_per_reason))
            for key in sorted(bucket.thumbs):
                if mine.would_take(key):
                    mine.add(key, bucket.thumbs[key])
        if not self._groups:
            self._groups = list(other._groups)
        for key, thumb in other._group_thumbs.items():
            self._group_thumbs.setdefault(key, thumb)
        return self

    def _group_thumb(self, key: str) -> Thumbnail:
        if key in self._group_thumbs:
            return self._group_thumbs[key]
        for bucket in self._buckets.values():  # a global stage's reject may have been offered with bytes
            if key in bucket.thumbs:
                return bucket.thumbs[key]
        return Thumbnail(
            placeholder_tile(self.size, "not offered", title="no image", quality=self.quality), False, "no image"
        )

    def to_table(self) -> pa.Table:
        """All thumbnails as a THUMBS_SCHEMA table: rejects by (stage, reason, key), then the groups in
        gallery order, each representative before its members."""
        rows: list[tuple] = []
        for stage, reason in sorted(self._buckets):
            bucket = self._buckets[(stage, reason)]
            for key in sorted(bucket.thumbs):
                t = bucket.thumbs[key]
                rows.append((key, KIND_REJECT, stage, reason, None, None, t.decoded, t.note or None, t.caption, t.jpeg))
        for g in self._groups:
            for key, dist in [(g.representative, None), *g.members]:
                t = self._group_thumb(key)
                rows.append(
                    (
                        key,
                        KIND_DUPLICATE,
                        None,
                        g.kind,
                        g.representative,
                        dist,
                        t.decoded,
                        t.note or None,
                        t.caption,
                        t.jpeg,
                    )
                )
        columns = list(zip(*rows)) if rows else [[] for _ in THUMBS_SCHEMA]
        return pa.table(
            {f.name: pa.array(list(col), f.type) for f, col in zip(THUMBS_SCHEMA, columns)}, schema=THUMBS_SCHEMA
        )

    def write(self, path) -> Path:
        """Write thumbs.parquet atomically (a temporary file in the same folder, then a rename)."""
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(self.to_table(), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path, **limits) -> ThumbnailCollector:
        """A collector holding what `path` (a thumbs.parquet) holds, e.g. to continue a resumed run."""
        import pyarrow.parquet as pq

        collector = cls(**limits)
        table = pq.read_table(path)
        group_members: dict[tuple[str, str], list[tuple[str, float | None]]] = {}
        for row in table.to_pylist():
            thumb = Thumbnail(row["jpeg"], row["decoded"], row["note"] or "", row.get("caption"))
            if row["kind"] == KIND_REJECT:
                bucket = collector._buckets.setdefault((row["stage"], row["reason"]), _Bucket(collector.max_per_reason))
                if bucket.would_take(row["key"]):
                    bucket.add(row["key"], thumb)
            elif row["kind"] == KIND_DUPLICATE:
                group_id = (row["reason"], row["group"])
                if group_id not in group_members:
                    group_members[group_id] = []
                if row["key"] != row["group"]:
                    group_members[group_id].append((row["key"], row["distance"]))
                if thumb.decoded:
                    collector._group_thumbs[row["key"]] = thumb
        collector._groups = [DuplicateGroup(kind, rep, ms, len(ms)) for (kind, rep), ms in group_members.items()]
        return collector
