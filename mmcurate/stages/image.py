"""Image stages: integrity, image_filter, exact_dedup, phash_dedup.

A text-only sample of instruction data (`has_image` false: stages.batch.text_only_rows) passes every one of them
untouched, its derived columns (width, height, format, sha256, phash) null; a null image on any other row is a
missing image (`missing_image`), as before.

Global stages with a per-batch part (the ``map_part`` convention)
----------------------------------------------------------------
Dedup needs a value computed from the image bytes (sha256, pHash) but decides over every sample. The bytes
never reach a global stage, so one recipe entry (``exact_dedup: {}``) has two parts:

* A :class:`GlobalStage` instance may carry ``map_part: MapStage | None``. When it is not None, the
  executor runs ``map_part`` in the map phase, at the recipe position of the global stage, exactly like a
  map stage listed there: same ``setup()``, ``batch_size``, ``resources``, ``requires`` and
  :class:`StageResult` contract (every row kept or rejected). ``map_part.name`` equals the global stage's
  name, so its rejects (e.g. an image pHash cannot decode) are attributed to the recipe entry.
* The columns ``map_part`` adds (``sha256``, ``phash``) are stored with the surviving metadata; the global
  stage's ``requires`` names them, and ``run(table)`` later sees them for every survivor of the map phase.
* ``map_part`` is built by the global stage's constructor from the same params: picklable, no other state.

Resources: the decode/hash stages use all cores through the native thread pool, so their ``resources.cpus``
is ``num_threads`` (or the machine's core count), set per instance.
"""

from __future__ import annotations

import functools
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate import dedup, image_rules
from mmcurate.ops.decode import DEFAULT_MAX_PIXELS
from mmcurate.ops.quality import QUALITY_COLUMNS
from mmcurate.ops.status import status_name
from mmcurate.pipeline.global_sharded import string_hash64
from mmcurate.pipeline.params import check_bool, check_choice, check_device, check_int, check_threads
from mmcurate.pipeline.reuse import fingerprint
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, rejects_table
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    MapStage,
    StageError,
    StageResult,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.stages.batch import (
    MISSING_IMAGE,
    blob_views,
    cpu_resources,
    cpu_threads,
    kept_and_rejected,
    masked,
    require_columns,
    text_only_rows,
    with_column,
)
from mmcurate.stages.quality_columns import QUALITY_FAST, has_quality_columns, quality_columns

_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that transpose the image


# ---------------------------------------------------------------------------------------------------------
# helpers


def _oriented_sizes(sizes_hw: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) as displayed: header sizes with the EXIF orientation applied."""
    h, w = sizes_hw[:, 0].astype(np.int32), sizes_hw[:, 1].astype(np.int32)
    swap = np.isin(orientation, _SWAPS_SIDES)
    return np.where(swap, h, w), np.where(swap, w, h)


# ---------------------------------------------------------------------------------------------------------
# integrity


#: The two pHash columns (pipeline.reuse): fast mode (integrity's fused decode) and exact (imagehash's).
PHASH_FAST = fingerprint("phash", exact=False)
PHASH_EXACT = fingerprint("phash", exact=True)


@registry.register
class Integrity(MapStage):
    """Decode check with the native decoder; adds width, height (as displayed, EXIF applied), format and
    file_size. Undecodable rows are rejected with the decoder's status as reason and its message as detail.

    The full decode goes through the fused decode -> pHash kernel in fast mode (``phash_bytes(exact=False)``):
    JPEGs decode from the luma plane at a reduced DCT scale, yet every entropy-coded coefficient is still
    decoded (that is where truncation and corruption show). The fast pHash it yields, a pure function of the
    bytes, is kept in the ``phash`` column, so ``phash_dedup`` (fast mode) does not decode the same bytes a
    second time. ``full_decode: false`` reads headers only (much faster; a file truncated after its header
    passes).

    ``quality: true`` (the default, with full_decode) also stores the image-quality columns of the same decode
    (``sharpness`` ... ``low_information``, mmcurate.ops.quality): the ``image_quality`` stage and phash_dedup's
    low-information rule then read them without decoding again (the chroma IDCT and the signals cost about 30 %
    of the fast decode on ~500 px JPEGs: benchmarks/README.md, "Image quality"; ``quality: false`` skips them)."""

    name = "integrity"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        max_pixels: int | None = DEFAULT_MAX_PIXELS
        full_decode: bool = True
        quality: bool = True
        num_threads: int | None = None

        def validate(self):
            from mmcurate.ops._inputs import INT64_MAX

            check_bool("quality", self.quality)
            # The decoder's limit is an int64: a larger value would fail mid-run, inside the native call.
            check_int("max_pixels", self.max_pixels, 0, INT64_MAX, optional=True)
            check_bool("full_decode", self.full_decode)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        # The sizes and format are the header probe's, pure functions of the bytes; a stored fast pHash proves
        # that a full decode of the same bytes succeeded, so only full_decode needs it.
        fps = {c: fingerprint("image_probe") for c in ("width", "height", "format", "file_size")}
        if self.params.full_decode:
            fps["phash"] = PHASH_FAST
            if self.params.quality:
                fps.update(dict.fromkeys(QUALITY_COLUMNS, QUALITY_FAST))
        return fps

    def reuse(self, batch: pa.Table) -> StageResult:
        """Stored rows decoded in the earlier run: only this run's pixel limit is applied again."""
        max_pixels = self.params.max_pixels or 0
        if not max_pixels:
            return StageResult(batch)
        area = pc.multiply(batch.column("width").cast(pa.int64()), batch.column("height").cast(pa.int64()))
        over = pc.fill_null(pc.greater(area, max_pixels), False).to_numpy(zero_copy_only=False)
        reasons = ["too_large" if o else None for o in over]
        details = [
            f"{w}x{h} exceeds max_pixels {max_pixels}" if o else None
            for o, w, h in zip(over, batch.column("width").to_pylist(), batch.column("height").to_pylist())
        ]
        return kept_and_rejected(batch, self.name, over, reasons, details)

    def process(self, batch: pa.Table) -> StageResult:
        from mmcurate.ops import phash_bytes, probe_images

        blobs = blob_views(batch.column("image"))
        text_only = text_only_rows(batch)  # passed untouched, their columns null
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        items = [b"" if b is None else b for b in blobs]
        max_pixels = self.params.max_pixels or 0
        header_status, formats, sizes, orientation = probe_images(items)
        codes = quality = None
        if self.params.full_decode:
            result = phash_bytes(
                items,
                exact=False,
                device="cpu",
                exif=True,
                max_pixels=max_pixels,
                num_threads=self.params.num_threads,
                quality=self.params.quality,
            )
            status, errors, codes = np.asarray(result.status), result.errors, np.asarray(result.codes)
            quality = result.quality
        else:
            status = header_status.copy()
            area = sizes[:, 0].astype(np.int64) * sizes[:, 1]
            if max_pixels:
                status[(status == 0) & (area > max_pixels)] = 4
            errors = [None] * len(items)
        width, height = _oriented_sizes(sizes, orientation)
        rejected, reasons, details = decode_verdicts(
            status, errors, missing, text_only, lambda i, reason: _probe_detail(reason, sizes[i], max_pixels)
        )
        file_size = pc.binary_length(batch.column("image"))
        if text_only.any():
            width, height = masked(width, text_only, pa.int32()), masked(height, text_only, pa.int32())
            formats = [None if t else f for f, t in zip(formats, text_only)]
            codes = None if codes is None else masked(codes.astype(np.uint64), text_only, pa.uint64())
        batch = with_column(batch, "width", width)
        batch = with_column(batch, "height", height)
        batch = with_column(batch, "format", formats)
        batch = with_column(batch, "file_size", pc.cast(file_size, pa.int64()))
        if codes is not None:
            batch = with_column(batch, "phash", codes if isinstance(codes, pa.Array) else codes.astype(np.uint64))
        if quality is not None:
            batch = quality_columns(batch, quality, text_only)
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


def decode_verdicts(status: np.ndarray, errors: list, missing: np.ndarray, text_only: np.ndarray, detail=None):
    """(rejected, reasons, details) of a batch decode: a missing image is missing_image, a failed decode its
    status name with the decoder's message (or ``detail(i, reason)`` when it gave none); text-only rows pass."""
    rejected = missing | ((status != 0) & ~text_only)
    reasons, details = [None] * len(status), [None] * len(status)
    for i in np.flatnonzero(rejected):
        if missing[i]:
            reasons[i], details[i] = MISSING_IMAGE
        else:
            reasons[i] = status_name(status[i])
            details[i] = errors[i] or (detail(i, reasons[i]) if detail else reasons[i])
    return rejected, reasons, details


def _probe_detail(reason: str, size_hw, max_pixels: int) -> str:
    if reason == "too_large":
        return f"{int(size_hw[1])}x{int(size_hw[0])} exceeds max_pixels {max_pixels}"
    return f"header probe: {reason}"


# ---------------------------------------------------------------------------------------------------------
# image_filter


@registry.register
class ImageFilter(MapStage):
    """Size rules: min/max side, min area, aspect ratio (long/short side), file size. Bounds come from
    ``preset`` ("datacomp", the default: min_side 200, max_aspect 3; "cogvlm": aspect 1/6..6; "none") with
    explicit keys on top. Uses the width/height/file_size columns from `integrity`; without them it probes
    the image headers itself (and adds the columns)."""

    name = "image_filter"
    requires = ("key", "source")

    @dataclass
    class Params:
        preset: str = "datacomp"
        min_side: int | None = None
        max_side: int | None = None
        min_area: int | None = None
        min_aspect: float | None = None
        max_aspect: float | None = None
        min_file_size: int | None = None
        max_file_size: int | None = None

        def validate(self):
            self.rules()

        def rules(self) -> image_rules.SizeRules:
            overrides = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}
            return image_rules.resolve_rules(self.preset, overrides)

    def __init__(self, **params):
        super().__init__(**params)
        self.rules = self.params.rules()

    def process(self, batch: pa.Table) -> StageResult:
        n = batch.num_rows
        reasons: list = [None] * n
        details: list = [None] * n
        unreadable = np.zeros(n, dtype=bool)
        text_only = text_only_rows(batch)  # no image to measure: passed untouched
        if "width" in batch.column_names and "height" in batch.column_names:
            width = batch.column("width").to_numpy(zero_copy_only=False)
            height = batch.column("height").to_numpy(zero_copy_only=False)
            unknown = np.isnan(width.astype(np.float64)) | np.isnan(height.astype(np.float64))
        else:
            width, height = np.zeros(n), np.zeros(n)
            unknown = np.ones(n, dtype=bool)
        unknown &= ~text_only
        if unknown.any() or ("width" not in batch.column_names and text_only.any()):
            batch, width, height, unreadable = self._probe(batch, unknown, width, height, reasons, details, text_only)
        width, height = np.nan_to_num(np.where(text_only, 0, width)), np.nan_to_num(np.where(text_only, 0, height))
        if self.rules.needs_file_size and "file_size" not in batch.column_names:
            require_columns(batch, self.name, ["image"])
            batch = with_column(batch, "file_size", pc.cast(pc.binary_length(batch.column("image")), pa.int64()))
        file_size = None
        if self.rules.needs_file_size:
            file_size = pc.fill_null(batch.column("file_size"), 0).to_numpy()
        width = np.where(unreadable, 0, width).astype(np.int64)
        height = np.where(unreadable, 0, height).astype(np.int64)
        rule, rule_details = image_rules.check_sizes(self.rules, width, height, file_size)
        failed = (rule >= 0) & ~unreadable & ~text_only
        for i in np.flatnonzero(failed):
            reasons[i], details[i] = image_rules.RULE_ORDER[rule[i]], rule_details[i]
        return kept_and_rejected(batch, self.name, failed | unreadable, reasons, details)

    def _probe(self, batch, unknown, width, height, reasons, details, text_only):
        """Header-probe the rows without sizes; rows whose header is unreadable are rejected with the
        probe's status (or missing_image). Text-only rows get null columns."""
        from mmcurate.ops import probe_images

        require_columns(batch, self.name, ["image"])
        rows = np.flatnonzero(unknown)
        blobs = blob_views(batch.column("image"))
        status, formats, sizes, orientation = probe_images([blobs[i] or b"" for i in rows])
        w, h = _oriented_sizes(sizes, orientation)
        width = np.array(width, dtype=np.float64)
        height = np.array(height, dtype=np.float64)
        width[rows], height[rows] = w, h
        unreadable = np.zeros(batch.num_rows, dtype=bool)
        for k, i in enumerate(rows):
            if blobs[i] is None:
                reasons[i], details[i] = MISSING_IMAGE
            elif status[k] != 0:
                reasons[i] = status_name(status[k])
                details[i] = f"header probe: {reasons[i]}"
            else:
                continue
            unreadable[i] = True
        if "width" not in batch.column_names or "height" not in batch.column_names:
            all_formats: list = [None] * batch.num_rows
            for k, i in enumerate(rows):
                all_formats[i] = formats[k]
            valid = ~unreadable & ~text_only
            batch = with_column(batch, "width", pa.array(width.astype(np.int32), mask=~valid))
            batch = with_column(batch, "height", pa.array(height.astype(np.int32), mask=~valid))
            if "format" not in batch.column_names:
                batch = with_column(batch, "format", all_formats)
            if "file_size" not in batch.column_names:
                batch = with_column(batch, "file_size", pc.cast(pc.binary_length(batch.column("image")), pa.int64()))
        return batch, np.nan_to_num(width), np.nan_to_num(height), unreadable


# ---------------------------------------------------------------------------------------------------------
# dedup


def parse_keep(keep) -> tuple[str | None, str]:
    """keep: "first" -> (None, "max"); {"max": col} / {"min": col} -> (col, "max"/"min")."""
    if keep == "first":
        return None, "max"
    if isinstance(keep, dict) and len(keep) == 1:
        ((prefer, column),) = keep.items()
        if prefer in ("max", "min") and isinstance(column, str) and column:
            return column, prefer
    raise ValueError(f'keep must be "first", {{max: <column>}} or {{min: <column>}}, got {keep!r}')


def _dedup_requires(base: tuple, keep) -> tuple:
    column, _ = parse_keep(keep)
    return base + ((column,) if column else ())


def keep_primary(table: pa.Table, keep) -> np.ndarray | None:
    """The score part of the preference order (lower first; NaN/null scores as +inf), None for keep "first"."""
    column, prefer = parse_keep(keep)
    if column is None:
        return None
    scores = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    primary = -scores if prefer == "max" else scores.copy()
    primary[np.isnan(primary)] = np.inf  # NaN and null (NaN after to_numpy) rank last
    return primary


def rank_of(keys, primary: np.ndarray | None) -> np.ndarray:
    """Preference rank (0 = kept first) of rows with these keys and keep_primary values: the primary, then
    key order. A total order over unique keys, so ranks computed over any subset of the samples order that
    subset as the ranks over all of them do (what the sharded grouping relies on)."""
    sort_keys = [("key", "ascending")]
    table = pa.table({"key": keys})
    if primary is not None:
        table = table.append_column("primary", pa.array(primary, pa.float64()))
        sort_keys = [("primary", "ascending")] + sort_keys
    order = pc.sort_indices(table, sort_keys=sort_keys).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank


def duplicate_tables(
    stage: str,
    kind: str,
    reason: str,
    dup_keys: list,
    dup_sources: list,
    rep_keys: list,
    distance: np.ndarray,
    verify_distance: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(rejects, duplicate links) of exact/phash/pdq duplicates, in the order given. ``verify_distance``: the
    verifying signal's distance of each link (pdq: the exact pHash's), else null."""
    if kind == "exact":
        details = [f"duplicate of {r}" for r in rep_keys]
    elif verify_distance is not None:
        details = [
            f"duplicate of {r} ({kind} distance {int(d)}, phash distance {int(v)})"
            for r, d, v in zip(rep_keys, distance, verify_distance)
        ]
    else:
        details = [f"duplicate of {r} (distance {int(d)})" for r, d in zip(rep_keys, distance)]
    rejected = rejects_table(dup_keys, dup_sources, stage, reason, details)
    duplicates = pa.table(
        {
            "key": pa.array(dup_keys, pa.string()),
            "duplicate_of": pa.array(rep_keys, pa.string()),
            "kind": pa.array([kind] * len(dup_keys), pa.string()),
            "distance": pa.array(np.asarray(distance).astype(np.float64)),
            "verify_distance": (
                pa.nulls(len(dup_keys), pa.float64())
                if verify_distance is None
                else pa.array(np.asarray(verify_distance).astype(np.float64))
            ),
        },
        schema=DUPLICATES_SCHEMA,
    )
    return rejected, duplicates


class Sha256(MapStage):
    """exact_dedup's map part: adds `sha256` (hex) of the original image bytes. A missing image is
    rejected (missing_image); hashlib releases the GIL, so large batches hash on threads."""

    name = "exact_dedup"
    requires = ("key", "source", "image")
    _THREADED_BYTES = 4 << 20

    @dataclass
    class Params:
        num_threads: int | None = None

        def validate(self):
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        return {"sha256": fingerprint("sha256")}

    def process(self, batch: pa.Table) -> StageResult:
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool)

        def digest(b):
            return None if b is None else hashlib.sha256(b).hexdigest()

        threads = cpu_threads(self.params.num_threads)
        total = sum(len(b) for b in blobs if b is not None)
        if threads > 1 and total > self._THREADED_BYTES:
            with ThreadPoolExecutor(threads) as pool:
                digests = list(pool.map(digest, blobs, chunksize=max(1, len(blobs) // (4 * threads))))
        else:
            digests = [digest(b) for b in blobs]
        batch = with_column(batch, "sha256", digests)
        missing &= ~text_only_rows(batch)  # a text-only sample has no digest and stays
        reasons = [MISSING_IMAGE[0] if m else None for m in missing]
        details = [MISSING_IMAGE[1] if m else None for m in missing]
        return kept_and_rejected(batch, self.name, missing, reasons, details)


@dataclass
class ExactDedupStats(StepStats):
    samples: int | None = None
    duplicates: int | None = None
    groups: int | None = None  # groups of identical bytes with more than one member
    without_hash: int | None = None
    partitions: int | None = None  # partitions of the digest shuffle


@registry.register
class ExactDedup(GlobalStage):
    """Byte-identical images (sha256). One representative per group: the first key in lexicographic order,
    or the best by a score column (``keep: {max: clip_score}``) with key order breaking ties. Duplicates
    are rejected (``duplicate_exact``) and linked to their representative (kind ``exact``, distance 0)."""

    name = "exact_dedup"

    @dataclass
    class Params:
        keep: object = "first"
        num_threads: int | None = None

        def validate(self):
            parse_keep(self.keep)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.requires = _dedup_requires(("key", "source", "sha256"), self.params.keep)
        self.map_part = Sha256(num_threads=self.params.num_threads)

    def run(self, ctx) -> GlobalResult:
        """Pass 1 per shard: (id, key, source, digest, score) of the samples with a digest, routed by a hash of
        the digest into partitions (equal digests meet in one; memory mode: one partition). Pass 2 per
        partition: exact_groups with ranks over the partition (a total order, so ranks over any subset order it
        as over all samples). The driver gets the duplicates only."""
        missing = [c for c in self.requires if c not in ctx.column_names]
        if missing:
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing)}")
        t0 = time.perf_counter()
        n_part = ctx.n_partitions(EXACT_ROWS_PER_PARTITION)
        store = ctx.partitions(self.name)
        counts = np.zeros(n_part, np.int64)
        n_rows = n_without = 0
        for c, n, w in ctx.map_fn(_exact_shuffle_task, [(v, self.params.keep, n_part, store) for v in ctx.views()]):
            counts += c
            n_rows += n
            n_without += w
        parts, groups = [], 0
        for t, g in ctx.map_fn(_exact_group_task, [(store, p) for p in np.flatnonzero(counts)]):
            parts.append(t)
            groups += g
        dups = pa.concat_tables(parts).sort_by(SAMPLE_ID) if parts else None
        if dups is None or not dups.num_rows:
            rejected, duplicates = duplicate_tables(self.name, "exact", "duplicate_exact", [], [], [], np.zeros(0))
            rejected = with_sample_ids(rejected, [])
        else:
            rejected, duplicates = duplicate_tables(
                self.name,
                "exact",
                "duplicate_exact",
                dups.column("key").to_pylist(),
                dups.column("source").to_pylist(),
                dups.column("duplicate_of").to_pylist(),
                np.zeros(dups.num_rows),
            )
            rejected = with_sample_ids(rejected, dups.column(SAMPLE_ID).to_numpy())
        stats = ExactDedupStats(
            samples=int(n_rows),
            duplicates=int(rejected.num_rows),
            groups=int(groups),
            without_hash=int(n_without),
            partitions=int(n_part),
            seconds=round(time.perf_counter() - t0, 6),
        )
        return GlobalResult(rejected=rejected, duplicates=duplicates, stats=stats)


# exact_dedup's tasks (module level: they travel to worker processes and Ray workers by reference)
EXACT_ROWS_PER_PARTITION = 1 << 20  # rows of (id, key, source, digest, score) per grouping task


def _exact_shuffle_task(task):
    view, keep, n_part, store = task
    column, _ = parse_keep(keep)
    t = view.read(["key", "source", "sha256", *([column] if column else [])])
    valid = t.column("sha256").is_valid().to_numpy(zero_copy_only=False)
    sub = t.filter(pa.array(valid)) if not valid.all() else t
    out = sub.select([SAMPLE_ID, "key", "source", "sha256"])
    primary = keep_primary(sub, keep)
    if primary is not None:
        out = out.append_column("_primary", pa.array(primary, pa.float64()))
    part = (string_hash64(sub.column("sha256")) % np.uint64(n_part)).astype(np.int64) if n_part > 1 else None
    counts = store.write(out, part, n_part, f"s{view.index:05d}")
    return counts, t.num_rows, int(np.count_nonzero(~valid))


def _exact_group_task(task):
    store, p = task
    t = store.read(p)
    # Dictionary codes stand for the digests: equal digests, equal codes (no Python strings).
    codes = pc.dictionary_encode(t.column("sha256")).combine_chunks().indices.to_numpy()
    primary = t.column("_primary").to_numpy() if "_primary" in t.column_names else None
    g = dedup.exact_groups(codes, rank_of(t.column("key"), primary))
    d = np.flatnonzero(g.is_duplicate)
    r = pa.array(g.representative[d])
    d = pa.array(d)
    return pa.table(
        {
            SAMPLE_ID: t.column(SAMPLE_ID).take(d),
            "key": t.column("key").take(d),
            "source": t.column("source").take(d),
            "duplicate_of": t.column("key").take(r),
        }
    ), g.n_groups


class PerceptualHash(MapStage):
    """phash_dedup's map part: adds `phash` (uint64) by the fused native decode -> pHash, and with ``quality``
    the image-quality columns of the same decode (the low-information rule reads ``low_information``). Images it
    cannot decode are rejected with the decoder's status (missing ones as missing_image)."""

    name = "phash_dedup"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        exact: bool = False
        device: str = "auto"
        quality: bool = False  # fast mode only: the columns are integrity's fast-decode measurement
        num_threads: int | None = None

        def validate(self):
            if self.quality and self.exact:
                raise ValueError("quality needs exact false (the quality columns are the fast decode's)")
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        fps = {"phash": PHASH_EXACT if self.params.exact else PHASH_FAST}
        if self.params.quality:
            fps.update(dict.fromkeys(QUALITY_COLUMNS, QUALITY_FAST))
        return fps

    def process(self, batch: pa.Table) -> StageResult:
        from mmcurate.ops import phash_bytes

        p = self.params
        text_only = text_only_rows(batch)  # no image: no pHash, kept
        if (
            not p.exact
            and "phash" in batch.column_names
            and np.array_equal(pc.is_null(batch.column("phash")).to_numpy(zero_copy_only=False), text_only)
            and (not p.quality or has_quality_columns(batch, text_only))
        ):
            # integrity already ran the same fast decode -> pHash on these bytes; do not decode them again
            return StageResult(batch)
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        result = phash_bytes(
            [b"" if b is None else b for b in blobs],
            exact=p.exact,
            device="cpu" if p.quality else p.device,  # the quality signals are measured in the CPU's fused decode
            num_threads=p.num_threads,
            quality=p.quality,
        )
        rejected, reasons, details = decode_verdicts(np.asarray(result.status), result.errors, missing, text_only)
        codes = np.asarray(result.codes, dtype=np.uint64)
        batch = with_column(batch, "phash", masked(codes, text_only, pa.uint64()) if text_only.any() else codes)
        if result.quality is not None:
            batch = quality_columns(batch, result.quality, text_only)
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


#: The PDQ columns (pipeline.reuse). ``pdq``: the 256-bit PDQ code as fixed_size_binary(32) (Meta's byte
#: order, ``bytes.hex()`` is its hex form); ``pdq_quality`` (int16); ``pdq_phash``: the exact pHash of the same
#: decode (imagehash.phash, so PHASH_EXACT; integrity's ``phash`` column is the fast one, a different function).
PDQ_EXACT = fingerprint("pdq", exact=True)
PDQ_TYPE = pa.binary(32)


class PdqHash(MapStage):
    """phash_dedup's map part with ``hash: pdq``: one exact decode per image (ops.pdq_bytes(exact=True,
    phash=True)) adds ``pdq``, ``pdq_quality`` and ``pdq_phash``. Images it cannot decode are rejected with the
    decoder's status (missing ones as missing_image); text-only rows keep null columns."""

    name = "phash_dedup"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        num_threads: int | None = None

        def validate(self):
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        return {"pdq": PDQ_EXACT, "pdq_quality": PDQ_EXACT, "pdq_phash": PHASH_EXACT}

    def process(self, batch: pa.Table) -> StageResult:
        from mmcurate.ops import pdq_bytes

        p = self.params
        text_only = text_only_rows(batch)
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        result = pdq_bytes(
            [b"" if b is None else b for b in blobs], exact=True, phash=True, device="cpu", num_threads=p.num_threads
        )
        rejected, reasons, details = decode_verdicts(np.asarray(result.status), result.errors, missing, text_only)
        n = len(blobs)
        codes = np.ascontiguousarray(np.asarray(result.codes, np.uint8).reshape(n, 32))
        validity = None if not text_only.any() else pa.array(~text_only).buffers()[1]
        pdq = pa.FixedSizeBinaryArray.from_buffers(
            PDQ_TYPE, n, [validity, pa.py_buffer(codes.tobytes())], null_count=int(text_only.sum())
        )
        quality = np.asarray(result.quality).astype(np.int16)
        phashes = np.asarray(result.phash, dtype=np.uint64)
        batch = with_column(batch, "pdq", pdq)
        batch = with_column(batch, "pdq_quality", masked(quality, text_only, pa.int16()))
        batch = with_column(batch, "pdq_phash", masked(phashes, text_only, pa.uint64()))
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


def pdq_rows(column) -> np.ndarray:
    """A non-null fixed_size_binary(32) column (or array) as uint64[n, 4] codes (ops.hamming's 256-bit layout)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 4), np.uint64)
    buf = np.frombuffer(arr.buffers()[1], np.uint8)[arr.offset * 32 : (arr.offset + len(arr)) * 32]
    return np.ascontiguousarray(buf).view("<u8").reshape(-1, 4).astype(np.uint64, copy=False)


def pdq_codes(view, min_quality: int = 0):
    """(ids, uint64[n, 4] PDQ codes) of one shard's samples with a PDQ of quality >= ``min_quality``: the
    Hamming primitive's shard (a task). Lower-quality samples are never candidates."""
    t = view.read(["pdq", "pdq_quality"])
    ok = pc.and_(t.column("pdq").is_valid(), pc.greater_equal(pc.fill_null(t.column("pdq_quality"), -1), min_quality))
    sub = t.filter(ok)
    return sub.column(SAMPLE_ID).to_numpy().astype(np.int64), pdq_rows(sub.column("pdq"))


#: PDQ defaults, measured on the labelled set (benchmarks/README_near_dup.md, "PDQ in phash_dedup"; seeds
#: 0/1/2, 400 bases): candidates within 22 bits of PDQ-256 (identity codes only; dihedral matching is a
#: follow-up), pair precision 0.9997/0.9957/0.9956 (26 bits: 0.9991/0.9938/0.9913), verified by the exact
#: pHash of the same decode within 12 bits (keeps 99.9 % of the pairs PDQ links, drops 10-15 % of template
#: links; 8 bits costs 1 % of the pairs for at most 1 false link), never linking an image of PDQ quality < 1
#: (solid colours and gradients have quality 0).
DEFAULT_PDQ_THRESHOLD = 22
DEFAULT_PDQ_VERIFY_PHASH = 12
DEFAULT_PDQ_MIN_QUALITY = 1
HASHES = ("phash", "pdq")


#: Defaults chosen on the labelled near-duplicate benchmark (benchmarks/README_dedup.md): the largest radius
#: whose duplicate pairs keep precision >= 0.99 (10 bits: P 0.992, R 0.889 with star linkage, fast mode);
#: 12 bits has the best F1 (0.946) but 3.9% of the pairs it groups are distinct images. Star linkage:
#: connected components chain distinct images together (P 0.963 at 10 bits). Fast mode: F1 within 0.005
#: of exact mode's, 3x faster.
DEFAULT_PHASH_MAX_DISTANCE = 10
DEFAULT_PHASH_LINKAGE = "star"
PHASH_MODES = ("fast", "exact")


@dataclass
class PhashDedupStats(StepStats):
    max_distance: int | None = None
    linkage: str | None = None
    mode: str | None = None
    expected_chance_links_per_sample: float | None = None  # unrelated codes within the radius by chance
    samples: int | None = None
    duplicates: int | None = None
    groups: int | None = None
    without_hash: int | None = None
    max_distance_to_representative: int | None = None
    partitions: dict | None = None  # sharded: the pigeonhole join's figures and the pairs it linked
    linked: int | None = None  # sharded: samples with a neighbour within max_distance


@registry.register
class PhashDedup(GlobalStage):
    """Perceptual near-duplicates: samples whose pHash differ by <= ``max_distance`` bits (default 10) are
    grouped (``linkage: star``, the default: only samples within max_distance of a kept representative,
    greedy in preference order, no chaining; ``connected``: connected components, where a member can be
    farther than max_distance from its representative through a chain) and one representative per group is kept
    (``keep`` as in exact_dedup). ``mode: fast`` hashes JPEGs from a reduced DCT-scale luma decode;
    ``exact`` equals imagehash.phash bit for bit. Duplicates are rejected (``duplicate_phash``, detail
    naming the representative and the Hamming distance to it) and linked (kind ``phash``).

    ``hash: pdq`` (issue 16): the map part decodes each image once exactly (:class:`PdqHash`: ``pdq``,
    ``pdq_quality``, ``pdq_phash``); pairs within ``pdq_threshold`` PDQ-256 bits (default 22) are linked only if
    their exact pHashes lie within ``verify_phash`` bits (default 12; null: unverified), and images of PDQ
    quality below ``min_quality`` (default 1: solid colours) never. Same linkage and keep; links are kind
    ``pdq`` (reason ``duplicate_pdq``) with the PDQ distance in ``distance`` and the pHash one in
    ``verify_distance``. ``max_distance`` and ``mode`` are pHash's and unused there; no dihedral matching yet.

    ``skip_low_information`` (default true, pHash only): images flagged ``low_information`` (blank, flat,
    placeholder or mostly padding: mmcurate.ops.quality) are never linked by pHash, whose codes of such images
    match unrelated ones (a star on black and a parking lot at distance 6; letterboxed images at radius 10);
    exact_dedup still removes their byte copies. The flag comes from integrity's decode, else (``mode: fast``) from
    the map part's, one decode either way; ``mode: exact`` uses integrity's flag when it is there. Such images count
    in ``without_hash``. Measured: benchmarks/README.md, "Image quality".

    pHash is not flip-invariant and moves a lot under crops of more than a few %: those are semantic dedup's
    job. Rows exact_dedup removed earlier are not in the table (global stages run in recipe order)."""

    name = "phash_dedup"

    @dataclass
    class Params:
        max_distance: int = DEFAULT_PHASH_MAX_DISTANCE
        mode: str = "fast"
        linkage: str = DEFAULT_PHASH_LINKAGE
        keep: object = "first"
        hash: str = "phash"
        pdq_threshold: int = DEFAULT_PDQ_THRESHOLD
        verify_phash: int | None = DEFAULT_PDQ_VERIFY_PHASH
        min_quality: int = DEFAULT_PDQ_MIN_QUALITY
        skip_low_information: bool = True
        device: str = "auto"
        num_threads: int | None = None

        def validate(self):
            check_int("max_distance", self.max_distance, 0, 64)
            check_choice("mode", self.mode, PHASH_MODES)
            check_choice("linkage", self.linkage, dedup.LINKAGES)
            if self.hash not in HASHES:
                raise ValueError(f"hash must be 'phash' or 'pdq', got {self.hash!r}")
            check_int("pdq_threshold", self.pdq_threshold, 0, 128)
            if self.verify_phash is not None:
                check_int("verify_phash", self.verify_phash, 0, 64)
            check_int("min_quality", self.min_quality, 0, 100)
            check_bool("skip_low_information", self.skip_low_information)
            check_device(self.device)
            parse_keep(self.keep)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if p.hash == "pdq":
            self.requires = _dedup_requires(("key", "source", "pdq", "pdq_quality", "pdq_phash"), p.keep)
            self.map_part = PdqHash(num_threads=p.num_threads)
        else:
            self.requires = _dedup_requires(("key", "source", "phash"), p.keep)
            # the map part adds the flag; a table from elsewhere without it is linked as before
            self.reads_if_present = ("low_information",) if p.skip_low_information else ()
            # fast mode measures the flag in its decode when integrity did not; exact mode reads integrity's (a
            # second set of columns from another decode would contradict the stored ones)
            self.map_part = PerceptualHash(
                exact=p.mode == "exact",
                device=p.device,
                quality=p.skip_low_information and p.mode == "fast",
                num_threads=p.num_threads,
            )

    def run(self, ctx) -> GlobalResult:
        """The candidates from the context's Hamming primitive (memory mode: every sample with a pHash; sharded:
        the samples linked by the pigeonhole join, never listing pairs), then dedup.near_groups over them with
        their keys, scores and pHashes fetched: the same groups as over all samples (an unlinked sample
        represents itself), in memory linear in a group of copies."""
        missing = [c for c in self.requires if c not in ctx.column_names]
        if missing:
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing)}")
        if self.params.hash == "pdq":
            return self._run_pdq(ctx)
        p = self.params
        t0 = time.perf_counter()
        n_in = ctx.n_alive
        skip_low = p.skip_low_information and "low_information" in ctx.column_names
        linked, n_codes, figures = ctx.near_candidates(
            self.name,
            [functools.partial(phash_codes, v, skip_low) for v in ctx.views()],
            p.max_distance,
        )
        column, _ = parse_keep(p.keep)
        dup_keys, dup_sources, rep_keys, dup_ids = [], [], [], np.zeros(0, np.int64)
        distance = np.zeros(0, np.int32)
        groups = n_pairs = 0
        if linked.size:
            t = ctx.fetch(linked, ["key", "source", "phash", *([column] if column else [])])
            rank = rank_of(t.column("key"), keep_primary(t, p.keep))
            codes = pc.cast(t.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
            g = dedup.near_groups(
                codes,
                p.max_distance,
                rank,
                linkage=p.linkage,
                device=p.device,
                num_threads=p.num_threads,
                count_pairs=figures is not None,
            )
            rep, n_pairs = g.representative, g.n_pairs
            d = np.flatnonzero(g.is_duplicate)
            keys = t.column("key")
            dup_keys = keys.take(pa.array(d)).to_pylist()
            dup_sources = t.column("source").take(pa.array(d)).to_pylist()
            rep_keys = keys.take(pa.array(rep[d])).to_pylist()
            dup_ids, distance = linked[d], g.distance[d]
            groups = g.n_groups
        rejected, duplicates = duplicate_tables(
            self.name, "phash", "duplicate_phash", dup_keys, dup_sources, rep_keys, distance
        )
        stats = PhashDedupStats(
            max_distance=p.max_distance,
            linkage=p.linkage,
            mode=p.mode,
            # unrelated codes within the radius by chance, per sample: ~0.01 at 1M with radius 10, ~9 at 1B
            # (docs/scaling.md: lower the radius as n grows)
            expected_chance_links_per_sample=float(f"{n_codes * dedup.chance_link_probability(p.max_distance):.3g}"),
            samples=int(n_in),
            duplicates=int(distance.size),
            groups=groups,
            without_hash=int(n_in - n_codes),
            max_distance_to_representative=int(distance.max()) if distance.size else None,
            partitions=None if figures is None else {**figures, "pairs": int(n_pairs)},
            linked=None if figures is None else int(linked.size),
            seconds=round(time.perf_counter() - t0, 6),
        )
        return GlobalResult(rejected=with_sample_ids(rejected, dup_ids), duplicates=duplicates, stats=stats)

    def _run_pdq(self, ctx) -> GlobalResult:
        """hash: pdq. Candidates: the samples of PDQ quality >= min_quality with another within pdq_threshold
        bits (the context's Hamming primitive over 256-bit codes; memory mode: all of them), then
        dedup.verified_near_groups over their PDQ codes, linking a pair only if its exact pHashes lie within
        verify_phash bits too. The groups depend only on the verified pairs and the ranks, so memory and sharded
        mode agree."""
        p = self.params
        t0 = time.perf_counter()
        n_in = ctx.n_alive
        linked, n_codes, figures = ctx.near_candidates(
            self.name, [functools.partial(pdq_codes, v, p.min_quality) for v in ctx.views()], p.pdq_threshold
        )
        column, _ = parse_keep(p.keep)
        dup_keys, dup_sources, rep_keys, dup_ids = [], [], [], np.zeros(0, np.int64)
        distance, verify_d = np.zeros(0, np.int32), np.zeros(0, np.int32)
        groups = n_pairs = 0
        if linked.size:
            t = ctx.fetch(linked, ["key", "source", "pdq", "pdq_phash", *([column] if column else [])])
            rank = rank_of(t.column("key"), keep_primary(t, p.keep))
            verify = pc.cast(t.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
            g, vd = dedup.verified_near_groups(
                pdq_rows(t.column("pdq")),
                verify,
                p.pdq_threshold,
                p.verify_phash,
                rank,
                linkage=p.linkage,
                device=p.device,
                num_threads=p.num_threads,
            )
            n_pairs = g.n_pairs
            d = np.flatnonzero(g.is_duplicate)
            keys = t.column("key")
            dup_keys = keys.take(pa.array(d)).to_pylist()
            dup_sources = t.column("source").take(pa.array(d)).to_pylist()
            rep_keys = keys.take(pa.array(g.representative[d])).to_pylist()
            dup_ids, distance, verify_d = linked[d], g.distance[d], vd[d]
            groups = g.n_groups
        rejected, duplicates = duplicate_tables(
            self.name, "pdq", "duplicate_pdq", dup_keys, dup_sources, rep_keys, distance, verify_d
        )
        stats = PhashDedupStats(
            max_distance=p.pdq_threshold,
            linkage=p.linkage,
            mode="pdq",
            expected_chance_links_per_sample=float(
                f"{n_codes * dedup.chance_link_probability(p.pdq_threshold, bits=256):.3g}"
            ),
            samples=int(n_in),
            duplicates=int(distance.size),
            groups=groups,
            without_hash=int(n_in - n_codes),
            max_distance_to_representative=int(distance.max()) if distance.size else None,
            partitions=None if figures is None else {**figures, "pairs": int(n_pairs)},
            linked=None if figures is None else int(linked.size),
            seconds=round(time.perf_counter() - t0, 6),
        )
        return GlobalResult(rejected=with_sample_ids(rejected, dup_ids), duplicates=duplicates, stats=stats)


def phash_codes(view, skip_low_information: bool = False):
    """(ids, uint64 codes) of one shard's samples with a pHash (and, with skip_low_information, not flagged
    low_information): the Hamming primitive's shard (a task)."""
    t = view.read(["phash", *(["low_information"] if skip_low_information else [])])
    valid = t.column("phash").is_valid().to_numpy(zero_copy_only=False)
    if skip_low_information:
        valid &= ~pc.fill_null(t.column("low_information"), False).to_numpy(zero_copy_only=False)
    sub = t.filter(pa.array(valid)) if not valid.all() else t
    codes = pc.cast(sub.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    return sub.column(SAMPLE_ID).to_numpy().astype(np.int64), codes
