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

from mmcurate.curate import dedup, image_rules, keypoints, local_detail
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
    kind: str | list,
    reason: str | list,
    dup_keys: list,
    dup_sources: list,
    rep_keys: list,
    distance: np.ndarray,
    verify_distance: np.ndarray | None = None,
    transform: list | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(rejects, duplicate links) of exact/phash/pdq duplicates, in the order given. ``kind`` and ``reason``: one
    for all or one per link (pdq: "pdq" or "template"). ``verify_distance``: the verifying signal's distance of each
    link (pdq: the exact pHash's), else null; ``transform``: the dihedral transform mapping each duplicate onto the
    sample it names (pdq with dihedral matching), else null."""
    kinds = [kind] * len(dup_keys) if isinstance(kind, str) else list(kind)
    if kind == "exact":
        details = [f"duplicate of {r}" for r in rep_keys]
    elif verify_distance is not None:
        under = (
            [""] * len(dup_keys) if transform is None else [f" under {t}" if t != "identity" else "" for t in transform]
        )
        details = [
            f"duplicate of {r} (pdq distance {int(d)}{u}, phash distance {int(v)})"
            for r, d, v, u in zip(rep_keys, distance, verify_distance, under)
        ]
    else:
        details = [f"duplicate of {r} (distance {int(d)})" for r, d in zip(rep_keys, distance)]
    rejected = rejects_table(dup_keys, dup_sources, stage, reason, details)
    duplicates = pa.table(
        {
            "key": pa.array(dup_keys, pa.string()),
            "duplicate_of": pa.array(rep_keys, pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "distance": pa.array(np.asarray(distance).astype(np.float64)),
            "verify_distance": (
                pa.nulls(len(dup_keys), pa.float64())
                if verify_distance is None
                else pa.array(np.asarray(verify_distance).astype(np.float64))
            ),
            "transform": pa.array([None] * len(dup_keys) if transform is None else transform, pa.string()),
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
#: Dihedral matching's columns: ``pdq_dihedral``, the PDQ codes of the 7 other transforms of the decoded pixels
#: (mmcurate.reference.TRANSFORMS' order, identity left out: it is ``pdq``), 7 x 32 bytes; ``pdq_dihedral_phash``,
#: their exact pHashes (7 little-endian uint64). ``pdq_detail``: curate.local_detail's grid of the same decode.
PDQ_DIHEDRAL = fingerprint("pdq", exact=True, dihedral="transformed pixels")
PHASH_DIHEDRAL = fingerprint("phash", exact=True, dihedral="transformed pixels")
PDQ_DIHEDRAL_TYPE = pa.binary(7 * 32)
PHASH_DIHEDRAL_TYPE = pa.binary(7 * 8)
#: ``pdq_keypoints``: curate.keypoints' packed ORB keypoints of the canonical luma (at most 4,616 bytes).
PDQ_KEYPOINTS = fingerprint(
    "orb_keypoints",
    version=keypoints.VERSION,
    side=keypoints.SIDE,
    min_side=keypoints.MIN_SIDE,
    luma="pdq luma of the exact decode, area average",
    features=keypoints.FEATURES,
    equalised=True,
    **keypoints.ORB_PARAMS,
)


class PdqHash(MapStage):
    """phash_dedup's map part with ``hash: pdq``: one exact decode per image adds ``pdq``, ``pdq_quality`` and
    ``pdq_phash``; with ``dihedral`` also ``pdq_dihedral`` and ``pdq_dihedral_phash`` (PDQ and exact pHash of the
    7 other rotations and flips of the decoded pixels), with ``detail`` ``pdq_detail`` (curate.local_detail's grid).
    All from one native call, ops.pdq_bytes(exact=True, phash=True, dihedral="pixels", detail=True): its pixels
    never reach Python. Bytes per sample: 42 (pdq, quality, pHash), + 280 with dihedral, + 512 with detail. Images it
    cannot decode are rejected with the decoder's status (missing ones as missing_image); text-only rows keep null
    columns. With ``keypoints``, ``pdq_keypoints`` (curate.keypoints: ORB keypoints of the luma thumbnail the same
    native call returns, ``luma_side``; at most 4,616 bytes) for the images that decoded."""

    name = "phash_dedup"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        dihedral: bool = False
        detail: bool = False
        keypoints: bool = False
        num_threads: int | None = None

        def validate(self):
            check_bool("dihedral", self.dihedral)
            check_bool("detail", self.detail)
            check_bool("keypoints", self.keypoints)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        fps = {"pdq": PDQ_EXACT, "pdq_quality": PDQ_EXACT, "pdq_phash": PHASH_EXACT}
        if self.params.dihedral:
            fps |= {"pdq_dihedral": PDQ_DIHEDRAL, "pdq_dihedral_phash": PHASH_DIHEDRAL}
        if self.params.detail:
            fps["pdq_detail"] = fingerprint("local_detail", grid=local_detail.GRID, bytes=local_detail.DETAIL_BYTES)
        if self.params.keypoints:
            fps["pdq_keypoints"] = PDQ_KEYPOINTS
        return fps

    def process(self, batch: pa.Table) -> StageResult:
        from mmcurate.ops import pdq_bytes

        p = self.params
        text_only = text_only_rows(batch)
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        n = len(blobs)
        result = pdq_bytes(
            [b"" if b is None else b for b in blobs],
            exact=True,
            dihedral="pixels" if p.dihedral else False,
            phash=True,
            detail=p.detail,
            luma_side=keypoints.SIDE if p.keypoints else 0,
            device="cpu",
            num_threads=p.num_threads,
        )
        rejected, reasons, details = decode_verdicts(np.asarray(result.status), result.errors, missing, text_only)
        codes = np.asarray(result.codes, np.uint8).reshape(n, -1, 32)
        phashes = np.asarray(result.phash, np.uint64).reshape(n, -1)
        quality = np.asarray(result.quality).astype(np.int16)
        batch = with_column(batch, "pdq", _fixed_binary(codes[:, 0], PDQ_TYPE, text_only))
        batch = with_column(batch, "pdq_quality", masked(quality, text_only, pa.int16()))
        batch = with_column(batch, "pdq_phash", masked(phashes[:, 0], text_only, pa.uint64()))
        if p.dihedral:
            batch = with_column(
                batch, "pdq_dihedral", _fixed_binary(codes[:, 1:].reshape(n, -1), PDQ_DIHEDRAL_TYPE, text_only)
            )
            rest = np.ascontiguousarray(phashes[:, 1:].astype("<u8")).view(np.uint8).reshape(n, -1)
            batch = with_column(batch, "pdq_dihedral_phash", _fixed_binary(rest, PHASH_DIHEDRAL_TYPE, text_only))
        if p.detail:
            detail = np.asarray(result.detail, np.uint8)
            batch = with_column(
                batch, "pdq_detail", _fixed_binary(detail, pa.binary(local_detail.DETAIL_BYTES), text_only)
            )
        if p.keypoints:
            batch = with_column(batch, "pdq_keypoints", _keypoint_column(result.luma, p.num_threads))
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


def _keypoint_column(lumas: list, num_threads) -> pa.Array:
    """curate.keypoints' blobs of the luma thumbnails pdq_bytes returned with the codes (null where it could not
    decode the image: that sample is rejected, or text-only)."""
    at = [i for i, luma in enumerate(lumas) if luma is not None]
    images = [lumas[i] for i in at]
    threads = min(cpu_threads(num_threads), max(1, len(images) // 16))
    if threads > 1:  # OpenCV releases the GIL; each thread its own detector
        chunks = [images[k::threads] for k in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(keypoints.extract, chunks))
        packed: list = [None] * len(images)
        for k, part in enumerate(parts):
            packed[k::threads] = part
    else:
        packed = keypoints.extract(images)
    out: list = [None] * len(lumas)
    for i, blob in zip(at, packed):
        out[i] = blob
    return pa.array(out, pa.binary())


def _fixed_binary(values: np.ndarray, type_: pa.DataType, null: np.ndarray) -> pa.Array:
    """uint8[n, width] rows as a fixed_size_binary(width) array, null where ``null``."""
    values = np.ascontiguousarray(values, np.uint8)
    validity = None if not null.any() else pa.array(~null).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(
        type_, len(values), [validity, pa.py_buffer(values.tobytes())], null_count=int(null.sum())
    )


def pdq_rows(column) -> np.ndarray:
    """A non-null fixed_size_binary(32) column (or array) as uint64[n, 4] codes (ops.hamming's 256-bit layout)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 4), np.uint64)
    buf = np.frombuffer(arr.buffers()[1], np.uint8)[arr.offset * 32 : (arr.offset + len(arr)) * 32]
    return np.ascontiguousarray(buf).view("<u8").reshape(-1, 4).astype(np.uint64, copy=False)


def pdq_codes(view, min_quality: int = 0, dihedral: bool = False, fold_within: int | None = None):
    """(ids, uint64[n, 4] PDQ codes) of one shard's samples with a PDQ of quality >= ``min_quality``: the
    Hamming primitive's shard (a task). Lower-quality samples are never candidates. dihedral: the codes of the 8
    transforms, uint64[n, 8, 4] (identity first), so a transform of one within the radius of another links;
    ``fold_within``: transforms within that many bits of their own identity code folded into it
    (dedup.fold_symmetric_transforms)."""
    t = view.read(["pdq", "pdq_quality", *(["pdq_dihedral"] if dihedral else [])])
    ok = pc.and_(t.column("pdq").is_valid(), pc.greater_equal(pc.fill_null(t.column("pdq_quality"), -1), min_quality))
    sub = t.filter(ok)
    ids = sub.column(SAMPLE_ID).to_numpy().astype(np.int64)
    if not dihedral:
        return ids, pdq_rows(sub.column("pdq"))
    variants = pdq_variants(sub)
    if fold_within is not None:
        variants = dedup.fold_symmetric_transforms(variants, fold_within)
    return ids, variants


def keypoint_codes(view, min_quality: int = 0, exclude=None):
    """(ids, uint64 exact pHashes) of one shard's samples with keypoints and a PDQ of quality >= ``min_quality``,
    less the sorted sample ids ``exclude`` (what the PDQ pass removed): the keypoint pass's shard (a task)."""
    t = view.read(["pdq_phash", "pdq_quality", "pdq_keypoints"])
    ok = pc.and_(
        pc.and_(t.column("pdq_phash").is_valid(), t.column("pdq_keypoints").is_valid()),
        pc.greater_equal(pc.fill_null(t.column("pdq_quality"), -1), min_quality),
    )
    sub = t.filter(ok)
    ids = sub.column(SAMPLE_ID).to_numpy().astype(np.int64)
    codes = pc.cast(sub.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    if exclude is not None and len(exclude):
        keep = ~np.isin(ids, exclude, assume_unique=True)
        ids, codes = ids[keep], codes[keep]
    return ids, codes


def _fixed_rows(column, width: int) -> np.ndarray:
    """A non-null fixed_size_binary(width) column as uint8[n, width]."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    buf = np.frombuffer(arr.buffers()[1], np.uint8) if len(arr) else np.zeros(0, np.uint8)
    return buf[arr.offset * width : (arr.offset + len(arr)) * width].reshape(-1, width)


def pdq_variants(table: pa.Table) -> np.ndarray:
    """uint64[n, 8, 4]: each row's PDQ codes of its 8 transforms (``pdq``, then ``pdq_dihedral``)."""
    rows = np.concatenate([_fixed_rows(table.column("pdq"), 32), _fixed_rows(table.column("pdq_dihedral"), 7 * 32)], 1)
    return np.ascontiguousarray(rows).view("<u8").reshape(-1, 8, 4).astype(np.uint64, copy=False)


def phash_variants(table: pa.Table) -> np.ndarray:
    """uint64[n, 8]: each row's exact pHash of its 8 transforms (``pdq_phash``, then ``pdq_dihedral_phash``)."""
    own = pc.cast(table.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    rest = np.ascontiguousarray(_fixed_rows(table.column("pdq_dihedral_phash"), 7 * 8)).view("<u8")
    return np.concatenate([own[:, None], rest.astype(np.uint64)], axis=1)


#: PDQ defaults, measured on the labelled set (benchmarks/README_near_dup.md, "phash_dedup end to end"; seeds
#: 0/1/2, 400 bases): candidates within 22 bits of PDQ-256 under any of the 8 rotations/flips (dihedral recall
#: 0.985-0.988), verified by the exact pHash under the matched transform within 12 bits, never linking an image of
#: PDQ quality < 1 (solid colours and gradients have quality 0), template pairs kept apart: group precision
#: 1.0000/1.0000/0.9999 (without the template rule 0.993/0.991/0.990: distinct tiles that are near-rotations of
#: each other; 26 bits: 0.988/0.977/0.978).
DEFAULT_PDQ_THRESHOLD = 22
DEFAULT_PDQ_VERIFY_PHASH = 12
DEFAULT_PDQ_MIN_QUALITY = 1
#: the keypoint pass's pHash radius and inliers (benchmarks/README_near_dup.md, "Keypoint verification")
DEFAULT_KEYPOINT_RADIUS = 16
DEFAULT_KEYPOINT_INLIERS = keypoints.DEFAULT_MIN_INLIERS
HASHES = ("phash", "pdq")
#: hash: pdq, what a verified link between two template variants (same layout, another print or text; told apart
#: by curate.local_detail) does: "keep" links them (kind template) without rejecting either, "drop" rejects them
#: as duplicates (kind template, reason duplicate_template), "off" does not look (every link is kind pdq).
TEMPLATE_POLICIES = ("keep", "drop", "off")


#: Defaults chosen on the labelled near-duplicate benchmark (benchmarks/README_dedup.md): the largest radius
#: whose duplicate pairs keep precision >= 0.99 (10 bits: P 0.992, R 0.889 with star linkage, fast mode);
#: 12 bits has the best F1 (0.946) but 3.9% of the pairs it groups are distinct images. Star linkage:
#: connected components chain distinct images together (P 0.963 at 10 bits). Fast mode: F1 within 0.005
#: of exact mode's, 3x faster.
DEFAULT_PHASH_MAX_DISTANCE = 10
DEFAULT_PHASH_LINKAGE = "star"
#: Low-information images (skip_low_information) link only to each other, within this many pHash bits and with
#: brightness, contrast and colourfulness each within LOW_INFORMATION_TOLERANCE levels: a flat graphic's identity
#: is its global statistics (distinct solid colours can share one pHash). Measured on the labelled set
#: (benchmarks/README.md, "Image quality"): re-encoded copies of flat graphics linked 0.80-0.86 (0.54-0.57 with no
#: link), precision as high.
DEFAULT_LOW_INFORMATION_RADIUS = 2
LOW_INFORMATION_TOLERANCE = 4.0
LOW_INFORMATION_STATS = ("brightness", "contrast", "colourfulness")
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
    dihedral: bool | None = None  # hash: pdq
    templates: int | None = None  # hash: pdq, template links (kept or rejected by the policy)
    low_information_duplicates: int | None = None  # pHash: low-information images linked to each other
    keypoint_duplicates: int | None = None  # pdq with keypoints: crops and other copies the keypoint pass linked


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
    ``verify_distance``. ``max_distance`` and ``mode`` are pHash's and unused there.

    ``dihedral: true`` (the default with pdq): a pair links when any of the 8 rotations/flips of one image (PDQ of
    the transformed pixels, stored by the map part) lies within ``pdq_threshold`` of the other, verified by the
    exact pHash *under that transform*; duplicates.parquet's ``transform`` names the transform mapping the duplicate
    onto the sample it is linked to (``identity``, ``rot90``, ``flip_y``, ...). ``templates`` (pdq): a verified link
    whose images differ locally both ways (curate.local_detail: same layout, another print or text) is a template,
    not a duplicate: ``keep`` (default) leaves both images, links the later-ranked one to its partner with kind
    ``template``; ``drop`` rejects it (kind ``template``, reason ``duplicate_template``); ``off`` does not look.
    Both keep a huge cluster of distinct near-copies linear in memory (docs/scaling.md): transform-only pairs are
    explicit edges beside the cluster's implicit ball, and the template check sees each ball member against the
    ball's anchor (a refused member leaves the ball, for a ball of its own variant). A transform whose code lies
    within ``pdq_threshold`` of the image's own code (an image nearly symmetric under it) is not searched for pairs
    of its own: its flipped copies match by identity already, and searching it would list every pair of a cluster
    of its copies (pairs found are still matched, verified and checked under their closest transform).

    ``keypoints: true`` (pdq only; needs OpenCV: ``pip install 'mmcurate[keypoints]'``): a second pass, over what
    the PDQ pass kept, links the copies PDQ misses, crops above all (PDQ moves ~60 bits under a 2-8 % crop): pairs
    whose exact pHashes lie within ``keypoint_radius`` bits (default 16) are linked when at least
    ``keypoint_inliers`` (default 10) ORB keypoints of the two images match under one similarity transform
    (curate.keypoints; the map part stores them as ``pdq_keypoints``, at most 4,616 bytes a sample). With
    ``templates: keep`` a pair whose transform leaves the frame in place and whose local-detail grids the template
    rule calls a template is refused, and no group holds a template pair (a crop of one print matches the other
    print's mockup too: the print with fewer inliers leaves the group). Links are kind ``keypoints`` (reason
    duplicate_keypoints, the pHash distance in ``distance``). Each candidate costs a keypoint match (~0.5 ms), and
    unrelated 64-bit codes lie within 16 bits with probability 3.9e-5: the pass suits runs up to ~10^5-10^6 images
    (lower ``keypoint_radius`` beyond: docs/scaling.md). Measured: benchmarks/README_near_dup.md, "Keypoint
    verification".

    ``skip_low_information`` (default true, pHash only): images flagged ``low_information`` (blank, flat,
    placeholder or mostly padding: mmcurate.ops.quality) are never linked by pHash to other images, whose codes of
    such images match unrelated ones (a star on black and a parking lot at distance 6; letterboxed images at radius
    10). They link only to each other: within ``low_information_radius`` bits (default 2; null: never) and with
    brightness, contrast and colourfulness each within 4 levels (a re-encoded copy of a logo, not another solid
    colour); exact_dedup still removes their byte copies. The flag and the statistics come from integrity's decode,
    else (``mode: fast``) from the map part's, one decode either way; ``mode: exact`` uses integrity's when they are
    there. Measured: benchmarks/README.md, "Image quality".

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
        dihedral: bool = True
        templates: str = "keep"
        keypoints: bool = False
        keypoint_radius: int = DEFAULT_KEYPOINT_RADIUS
        keypoint_inliers: int = DEFAULT_KEYPOINT_INLIERS
        skip_low_information: bool = True
        low_information_radius: int | None = DEFAULT_LOW_INFORMATION_RADIUS
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
            check_bool("dihedral", self.dihedral)
            check_choice("templates", self.templates, TEMPLATE_POLICIES)
            check_bool("keypoints", self.keypoints)
            if self.keypoints and self.hash != "pdq":
                raise ValueError("keypoints: true needs hash: pdq (the keypoint pass runs after the PDQ pass)")
            if self.keypoints:
                try:  # before any work: the map part needs it
                    keypoints.cv2()
                except ImportError as e:
                    raise ValueError(f"keypoints: true: {e}") from None
            check_int("keypoint_radius", self.keypoint_radius, 0, 64)
            check_int("keypoint_inliers", self.keypoint_inliers, 4, keypoints.FEATURES)
            check_bool("skip_low_information", self.skip_low_information)
            if self.low_information_radius is not None:
                check_int("low_information_radius", self.low_information_radius, 0, 64)
            check_device(self.device)
            parse_keep(self.keep)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if p.hash == "pdq":
            detail = p.templates != "off"
            columns = ("pdq", "pdq_quality", "pdq_phash")
            columns += ("pdq_dihedral", "pdq_dihedral_phash") if p.dihedral else ()
            columns += ("pdq_detail",) if detail else ()
            columns += ("pdq_keypoints",) if p.keypoints else ()
            self.requires = _dedup_requires(("key", "source", *columns), p.keep)
            self.map_part = PdqHash(
                dihedral=p.dihedral, detail=detail, keypoints=p.keypoints, num_threads=p.num_threads
            )
        else:
            self.requires = _dedup_requires(("key", "source", "phash"), p.keep)
            # the map part adds the flag; a table from elsewhere without it is linked as before
            self.reads_if_present = ("low_information", *LOW_INFORMATION_STATS) if p.skip_low_information else ()
            # fast mode measures the flag in its decode when integrity did not; exact mode reads integrity's (a
            # second set of columns from another decode would contradict the stored ones)
            self.map_part = PerceptualHash(
                exact=p.mode == "exact",
                device=p.device,
                quality=p.skip_low_information and p.mode == "fast",
                num_threads=p.num_threads,
            )

    def run(self, ctx) -> GlobalResult:
        """The candidates from the context's Hamming primitive (memory mode: every sample with a code; sharded:
        the samples linked by the pigeonhole join, never listing pairs), then the hash's grouping over them with
        their keys, scores and codes fetched (:class:`_PhashLinks`, :class:`_PdqLinks`): the same groups as over all
        samples (an unlinked sample represents itself), so memory and sharded mode agree. Then, the same way, pHash's
        pass among low-information images (:class:`_LowInformationLinks`) or PDQ's keypoint pass over what the PDQ
        pass kept (:class:`_KeypointLinks`)."""
        missing = [c for c in self.requires if c not in ctx.column_names]
        if missing:
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing)}")
        p = self.params
        links = _PdqLinks(p) if p.hash == "pdq" else _PhashLinks(p)
        t0 = time.perf_counter()
        n_in = ctx.n_alive
        # pHash only: PDQ has its own quality floor (min_quality)
        skip_low = p.hash == "phash" and p.skip_low_information and "low_information" in ctx.column_names
        shard_codes = functools.partial(links.codes, skip_low_information=True) if skip_low else links.codes
        found, n_codes, figures, linked = _near_links(ctx, self.name, links, shard_codes, p.keep)
        parts = [(found, links.kind)]
        low = NearLinks.empty()
        if skip_low and p.low_information_radius is not None and set(LOW_INFORMATION_STATS) <= set(ctx.column_names):
            low_links = _LowInformationLinks(p)
            low, n_low, _, _ = _near_links(ctx, self.name, low_links, low_links.codes, p.keep)
            n_codes += n_low
            parts.append((low, low_links.kind))
        ran_low = len(parts) > 1
        crops = NearLinks.empty()
        if p.hash == "pdq" and p.keypoints:  # over what the PDQ pass kept
            template = found.kind == "template"
            kp_links = _KeypointLinks(
                p, np.sort(found.ids[found.rejected]), np.stack([found.ids[template], found.rep_ids[template]], axis=1)
            )
            crops, _, _, _ = _near_links(ctx, self.name, kp_links, kp_links.codes, p.keep)
            parts.append((crops, kp_links.kind))
        tables = [part.tables(self.name, kind) for part, kind in parts]
        rejected = pa.concat_tables(
            [with_sample_ids(rej, part.ids[part.rejected]) for (rej, _), (part, _) in zip(tables, parts)]
        )
        duplicates = pa.concat_tables([dups for _, dups in tables])
        distance = np.concatenate([part.distance[part.rejected] for part, _ in parts])
        # the hash's own distances (the keypoint pass's are 64-bit pHash ones)
        own = np.concatenate([part.distance[part.rejected] for part, kind in parts if kind != _KeypointLinks.kind])
        stats = PhashDedupStats(
            max_distance=links.radius,
            linkage=p.linkage,
            mode=p.mode if p.hash == "phash" else "pdq",
            # unrelated codes within the radius by chance, per sample: pHash ~0.01 at 1M with radius 10, ~9 at 1B
            # (docs/scaling.md: lower the radius as n grows)
            expected_chance_links_per_sample=float(
                f"{n_codes * dedup.chance_link_probability(links.radius, bits=links.bits):.3g}"
            ),
            samples=int(n_in),
            duplicates=int(distance.size),
            groups=_groups_with_duplicates([part for part, _ in parts]),
            without_hash=int(n_in - n_codes),
            max_distance_to_representative=int(own.max()) if own.size else None,
            partitions=None if figures is None else {**figures, "pairs": int(found.pairs)},
            linked=None if figures is None else int(linked.size),
            dihedral=p.dihedral if p.hash == "pdq" else None,
            templates=int(np.count_nonzero(found.kind == "template")) if p.hash == "pdq" else None,
            low_information_duplicates=int(np.count_nonzero(low.rejected)) if ran_low else None,
            keypoint_duplicates=int(np.count_nonzero(crops.rejected)) if p.hash == "pdq" and p.keypoints else None,
            seconds=round(time.perf_counter() - t0, 6),
        )
        return GlobalResult(rejected=rejected, duplicates=duplicates, stats=stats)


def _groups_with_duplicates(parts: list[NearLinks]) -> int:
    """Groups with at least one duplicate once the passes' links are followed to a kept sample (a later pass can
    reject an earlier pass's representative: its group joins the later one's)."""
    dup = np.concatenate([part.ids[part.rejected] for part in parts])
    rep = np.concatenate([part.rep_ids[part.rejected] for part in parts])
    if not dup.size:
        return 0
    order = np.argsort(dup)
    dup, target = dup[order], rep[order]
    for _ in parts:  # each pass adds at most one step to a chain
        pos = np.minimum(np.searchsorted(dup, rep), dup.size - 1)
        hit = dup[pos] == rep
        if not hit.any():
            break
        rep = np.where(hit, target[pos], rep)
    return int(np.unique(rep).size)


def _near_links(ctx, step: str, links, shard_codes, keep):
    """One near-duplicate search: the candidates from the context's Hamming primitive over every shard's codes
    (``shard_codes(view)``), then ``links.group`` over them with their keys, scores and columns fetched. Returns
    (the NearLinks with keys resolved, the number of codes, the partitioning's figures, the candidates' ids)."""
    linked, n_codes, figures = ctx.near_candidates(
        step, [functools.partial(shard_codes, v) for v in ctx.views()], links.radius, links.code_shape
    )
    column, _ = parse_keep(keep)
    found = NearLinks.empty()
    if linked.size:
        t = ctx.fetch(linked, ["key", "source", *links.columns, *([column] if column else [])])
        found = links.group(t, rank_of(t.column("key"), keep_primary(t, keep)), count_pairs=figures is not None)
        found.take(t, linked)
    return found, n_codes, figures, linked


@dataclass
class NearLinks:
    """The links one near-duplicate grouping found, over the fetched candidates' rows: ``dup[i]`` linked to
    ``rep[i]`` with its distances, matched transform (dihedral PDQ, else None) and kind; ``rejected[i]`` false for a
    link that names without removing (a kept template). Then ``take`` resolves rows to keys, sources and ids."""

    dup: np.ndarray
    rep: np.ndarray
    distance: np.ndarray
    verify: np.ndarray | None
    transform: np.ndarray | None
    kind: np.ndarray  # str per link
    rejected: np.ndarray  # bool per link
    groups: int = 0
    pairs: int = 0
    keys: list | None = None
    rep_keys: list | None = None
    sources: list | None = None
    ids: np.ndarray | None = None
    rep_ids: np.ndarray | None = None

    @classmethod
    def empty(cls) -> NearLinks:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, None, None, np.zeros(0, object), np.zeros(0, bool), 0, 0, [], [], [], z, z)

    def take(self, t: pa.Table, linked: np.ndarray) -> None:
        order = np.lexsort((self.dup, ~self.rejected))  # rejected links first, each part by row (= sample id)
        for name in ("dup", "rep", "distance", "verify", "transform", "kind", "rejected"):
            v = getattr(self, name)
            setattr(self, name, None if v is None else v[order])
        keys = t.column("key")
        self.keys = keys.take(pa.array(self.dup)).to_pylist()
        self.rep_keys = keys.take(pa.array(self.rep)).to_pylist()
        self.sources = t.column("source").take(pa.array(self.dup)).to_pylist()
        self.ids = linked[self.dup]
        self.rep_ids = linked[self.rep]

    def tables(self, stage: str, kind: str) -> tuple[pa.Table, pa.Table]:
        """(rejects of the rejected links, every link) as duplicate_tables makes them."""
        reasons = ["duplicate_template" if k == "template" else f"duplicate_{kind}" for k in self.kind]
        names = None if self.transform is None else [_transform_name(k) for k in self.transform]
        rejected, duplicates = duplicate_tables(
            stage, list(self.kind), reasons, self.keys, self.sources, self.rep_keys, self.distance, self.verify, names
        )
        return rejected.filter(pa.array(self.rejected)), duplicates


def _transform_name(k) -> str:
    from mmcurate.reference import TRANSFORMS

    return TRANSFORMS[int(k)]


class _PhashLinks:
    """pHash-64: candidates within max_distance, dedup.near_groups (dense copy clusters kept implicit)."""

    kind, bits, columns = "phash", 64, ("phash",)
    code_shape = (1, 1)  # one 64-bit word per sample (the join's task size)

    def __init__(self, p):
        self.p, self.radius, self.codes = p, p.max_distance, phash_codes

    def group(self, t: pa.Table, rank: np.ndarray, count_pairs: bool) -> NearLinks:
        p = self.p
        codes = pc.cast(t.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
        g = dedup.near_groups(
            codes, p.max_distance, rank, linkage=p.linkage, device=p.device, num_threads=p.num_threads,
            count_pairs=count_pairs,
        )  # fmt: skip
        d = np.flatnonzero(g.is_duplicate)
        kind = np.full(d.size, "phash", object)
        return NearLinks(
            d, g.representative[d], g.distance[d], None, None, kind, np.ones(d.size, bool), g.n_groups, g.n_pairs or 0
        )


class _LowInformationLinks:
    """pHash-64 among low-information images only: candidates within low_information_radius, linked by
    dedup.verified_near_groups when brightness, contrast and colourfulness agree within LOW_INFORMATION_TOLERANCE
    (the rounded statistics are the tuples' second segment, so samples sharing a code but not a look stay apart;
    a dense cluster of near-copies stays implicit)."""

    kind, bits, code_shape = "phash", 64, (1, 1)
    columns = ("phash", *LOW_INFORMATION_STATS)

    def __init__(self, p):
        self.p, self.radius = p, p.low_information_radius
        self.codes = functools.partial(phash_codes, only_low_information=True)

    def group(self, t: pa.Table, rank: np.ndarray, count_pairs: bool) -> NearLinks:
        p = self.p
        codes = pc.cast(t.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
        stats = np.stack(
            [pc.fill_null(t.column(c), np.nan).to_numpy(zero_copy_only=False) for c in LOW_INFORMATION_STATS], axis=1
        ).astype(np.float64)
        rounded = np.clip(np.nan_to_num(np.rint(stats), nan=0.0), 0, 65535).astype(np.uint64)
        signature = rounded[:, 0] | (rounded[:, 1] << np.uint64(16)) | (rounded[:, 2] << np.uint64(32))

        def look_alike(a, b, transform):
            return (np.abs(stats[a] - stats[b]) <= LOW_INFORMATION_TOLERANCE).all(axis=1)

        g, _ = dedup.verified_near_groups(
            codes, signature, self.radius, None, rank, linkage=p.linkage, device=p.device,
            num_threads=p.num_threads, accept=look_alike,
        )  # fmt: skip
        d = np.flatnonzero(g.is_duplicate)
        kind = np.full(d.size, "phash", object)
        return NearLinks(
            d, g.representative[d], g.distance[d], None, None, kind, np.ones(d.size, bool), g.n_groups, g.n_pairs or 0
        )


class _PdqLinks:
    """PDQ-256 (issue 16): candidates within pdq_threshold of quality >= min_quality (with dihedral, any transform
    of one within the threshold of the other), dedup.verified_near_groups linking a pair only if its exact pHashes
    (under the transform that matched) lie within verify_phash bits, and, unless templates is "off", telling template
    variants apart by curate.local_detail: "keep" leaves them out of the grouping and links each kept one to the
    first-ranked kept template partner ranked before it, "drop" groups them as duplicates of kind template."""

    kind, bits = "pdq", 256

    def __init__(self, p):
        self.p, self.radius = p, p.pdq_threshold
        self.code_shape = (4, 8 if p.dihedral else 1)  # 256-bit codes, the 8 transforms' with dihedral matching
        self.codes = functools.partial(
            pdq_codes, min_quality=p.min_quality, dihedral=p.dihedral, fold_within=p.pdq_threshold
        )
        self.columns = ("pdq", "pdq_phash")
        self.columns += ("pdq_dihedral", "pdq_dihedral_phash") if p.dihedral else ()
        self.columns += ("pdq_detail",) if p.templates != "off" else ()

    def group(self, t: pa.Table, rank: np.ndarray, count_pairs: bool) -> NearLinks:
        p = self.p
        codes = pdq_rows(t.column("pdq"))
        verify = pc.cast(t.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
        variants = pdq_variants(t) if p.dihedral else None
        verify_variants = phash_variants(t) if p.dihedral else None
        grids = _fixed_rows(t.column("pdq_detail"), local_detail.DETAIL_BYTES) if p.templates != "off" else None
        templates: list = []

        def not_template(a, b, transform):
            tpl = local_detail.template_pairs(grids[a], grids[b], transform)
            templates.append(np.stack([a[tpl], b[tpl]], axis=1))
            return ~tpl

        g, vd = dedup.verified_near_groups(
            codes, verify, p.pdq_threshold, p.verify_phash, rank, linkage=p.linkage, device=p.device,
            num_threads=p.num_threads, variants=variants, verify_variants=verify_variants,
            accept=not_template if p.templates == "keep" else None,
        )  # fmt: skip
        d = np.flatnonzero(g.is_duplicate)
        rep, kind = g.representative[d], np.full(d.size, "pdq", object)
        transform = None if g.transform is None else g.transform[d]
        if p.templates == "drop":
            kind[local_detail.template_pairs(grids[d], grids[rep], 0 if transform is None else transform)] = "template"
        links = NearLinks(
            d, rep, g.distance[d], vd[d], transform, kind, np.ones(d.size, bool), g.n_groups, g.n_pairs or 0
        )
        if templates:
            links = _with_kept_templates(
                links, np.concatenate(templates), g, rank, variants, verify_variants, codes, verify, grids, p
            )
        return links


def _with_kept_templates(
    links: NearLinks, pairs, g, rank, variants, verify_variants, codes, verify, grids, p
) -> NearLinks:
    """templates: keep. Each kept sample with a template pair to another kept sample ranked before it is linked
    (kind template, not rejected) to the first-ranked such partner. ``pairs``: the pairs the template rule refused
    while grouping; in a dense cluster those are members against a ball's anchor (dedup's _reanchor), so each is
    also taken to the kept samples its ends are grouped under, a pair of kept samples counting when it is a link the
    rule refuses itself: within the threshold, verified, under its closest transform, a template (checked in
    chunks: a cluster of variants that share nothing refuses every pair)."""

    def match(a, b):  # (PDQ distance, transform a -> b, pHash distance under it) of sample pairs
        if variants is not None:
            return dedup.dihedral_match(variants, verify_variants, a, b)
        distance = np.bitwise_count(codes[a] ^ codes[b]).sum(axis=1).astype(np.int32)
        return distance, np.zeros(a.size, np.int64), np.bitwise_count(verify[a] ^ verify[b]).astype(np.int32)

    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    direct = (g.representative[pairs] == pairs).all(axis=1)  # refused pairs of kept samples: taken as they are
    mapped = np.sort(g.representative[pairs[~direct]], axis=1)
    mapped = np.unique(mapped[mapped[:, 0] != mapped[:, 1]], axis=0)
    checked = [np.sort(pairs[direct], axis=1)]
    for s in range(0, len(mapped), dedup.PAIR_CHUNK):  # a pair of kept samples a refused pair was grouped under
        a, b = mapped[s : s + dedup.PAIR_CHUNK, 0], mapped[s : s + dedup.PAIR_CHUNK, 1]
        distance, transform, vd = match(a, b)
        ok = distance <= p.pdq_threshold
        if p.verify_phash is not None:
            ok &= vd <= p.verify_phash
        ok[ok] = local_detail.template_pairs(grids[a[ok]], grids[b[ok]], transform[ok])
        checked.append(np.stack([a[ok], b[ok]], axis=1))
    pairs = np.unique(np.concatenate(checked), axis=0)
    if not pairs.size:
        return links
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    pairs = pairs[rank[pairs[:, 1]] < rank[pairs[:, 0]]]  # (member, partner ranked before it)
    pairs = pairs[np.lexsort((rank[pairs[:, 1]], pairs[:, 0]))]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    a, b = pairs[first, 0], pairs[first, 1]
    distance, transform, vd = match(a, b)
    tr = None if links.transform is None else np.concatenate([links.transform, transform])
    return NearLinks(
        np.concatenate([links.dup, a]), np.concatenate([links.rep, b]), np.concatenate([links.distance, distance]),
        np.concatenate([links.verify, vd]), tr, np.concatenate([links.kind, np.full(a.size, "template", object)]),
        np.concatenate([links.rejected, np.zeros(a.size, bool)]), links.groups, links.pairs,
    )  # fmt: skip


class _KeypointLinks:
    """The keypoint pass (``keypoints: true``, after the PDQ pass, over what it kept): candidates whose exact
    pHashes lie within keypoint_radius bits (crops move PDQ too far), linked by dedup.verified_near_groups when
    curate.keypoints finds at least keypoint_inliers keypoints matching under one similarity transform.

    With ``templates: keep``, template variants keep their standing. Keypoints see a mockup's layout, not its print,
    so the template rule decides where it can: a pair whose transform leaves the frame in place (a re-encode or
    resize, not a crop) and whose local_detail grids it calls a template is refused. Under a crop it cannot (the
    cells no longer line up), and a crop of one print then matches the other print's mockup too: a group would
    hold both prints. So a group may not hold a template pair (one the PDQ pass linked as templates, ``templates``,
    or one this pass refused or finds among a group's members, checked pairwise in groups of up to
    CONSISTENT_GROUP members): of the two, the member with fewer inliers to the representative leaves the group (the
    other print; it stays kept). Links are kind ``keypoints`` (reason duplicate_keypoints) with the pHash distance."""

    kind, bits, code_shape = "keypoints", 64, (1, 1)
    #: groups up to this size have every pair of members checked for a template pair (larger ones: known pairs)
    CONSISTENT_GROUP = 64

    def __init__(self, p, exclude: np.ndarray, templates: np.ndarray):
        self.p, self.radius, self.templates = p, p.keypoint_radius, templates
        self.codes = functools.partial(keypoint_codes, min_quality=p.min_quality, exclude=exclude)
        self.columns = ("pdq_phash", "pdq_keypoints", *(("pdq_detail",) if p.templates == "keep" else ()))

    def group(self, t: pa.Table, rank: np.ndarray, count_pairs: bool) -> NearLinks:
        p = self.p
        codes = pc.cast(t.column("pdq_phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
        blobs = _BlobColumn(t.column("pdq_keypoints"))
        grids = _fixed_rows(t.column("pdq_detail"), local_detail.DETAIL_BYTES) if p.templates == "keep" else None
        refused: list[np.ndarray] = []

        def template(a, b, inliers, shift):  # verified pairs the template rule calls templates (frames in place)
            at = np.flatnonzero((inliers >= p.keypoint_inliers) & (shift <= keypoints.ALIGNED_SHIFT))
            tpl = np.zeros(len(a), bool)
            tpl[at[local_detail.template_pairs(grids[a[at]], grids[b[at]], 0)]] = True
            return tpl

        def verified(a, b, transform):
            inliers, shift = keypoints.inlier_counts(blobs, a, b)
            ok = inliers >= p.keypoint_inliers
            if grids is not None:
                tpl = template(a, b, inliers, shift)
                refused.append(np.stack([a[tpl], b[tpl]], axis=1))
                ok &= ~tpl
            return ok

        # every sample its own tuple (the verify code), so samples sharing a pHash are matched too
        g, _ = dedup.verified_near_groups(
            codes, np.arange(len(codes), dtype=np.uint64), self.radius, None, rank, linkage=p.linkage,
            device=p.device, num_threads=p.num_threads, accept=verified,
        )  # fmt: skip
        representative = g.representative
        if grids is not None:
            known = [*refused, _rows_of(t, self.templates)]
            representative = self._without_template_pairs(representative, known, blobs, template)
        d = np.flatnonzero(representative != np.arange(len(representative)))
        distance = np.bitwise_count(codes[d] ^ codes[representative[d]]).astype(np.int32)
        kind = np.full(d.size, "keypoints", object)
        groups = int(np.unique(representative[d]).size)
        return NearLinks(
            d, representative[d], distance, None, None, kind, np.ones(d.size, bool), groups, g.n_pairs or 0
        )

    def _without_template_pairs(self, representative: np.ndarray, known: list, blobs, template) -> np.ndarray:
        """The grouping with no template pair inside a group (see the class): members of a known template pair in
        one group, or of a pair the template rule calls one among a small group's members, leave it, the one with
        fewer inliers to the representative (a member template of the representative leaves too)."""
        representative = representative.copy()
        members = np.flatnonzero(representative != np.arange(len(representative)))
        if not members.size:
            return representative
        by_group = members[np.argsort(representative[members], kind="stable")]
        bounds = np.flatnonzero(np.diff(representative[by_group])) + 1
        pairs = [np.concatenate(known).reshape(-1, 2)]
        for group in np.split(by_group, bounds):  # every pair of a small group's members
            if 2 <= group.size <= self.CONSISTENT_GROUP:
                i, j = np.triu_indices(group.size, 1)
                a, b = group[i], group[j]
                inliers, shift = keypoints.inlier_counts(blobs, a, b)
                tpl = template(a, b, inliers, shift)
                pairs.append(np.stack([a[tpl], b[tpl]], axis=1))
        pairs = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
        for a, b in pairs.tolist():
            ra, rb = representative[a], representative[b]
            if ra != rb and rb != a and ra != b:
                continue  # not in one group
            if rb == a or ra == b:  # a member and its representative: the member leaves
                leave = b if rb == a else a
            else:
                inliers, _ = keypoints.inlier_counts(blobs, [a, b], [ra, rb])
                leave = b if inliers[0] >= inliers[1] else a
            representative[leave] = leave
        return representative


class _BlobColumn:
    """A binary column's values by row, as zero-copy Arrow buffers (None where null): the keypoint pass reads the
    blobs of the pairs it matches, not every candidate's as Python bytes."""

    def __init__(self, column):
        self.array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):
        return self.array[int(i)].as_buffer()


def _rows_of(t: pa.Table, id_pairs: np.ndarray) -> np.ndarray:
    """int64[k, 2]: the rows of ``t`` (by SAMPLE_ID) of the sample-id pairs both of whose samples it holds."""
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    id_pairs = np.asarray(id_pairs, np.int64).reshape(-1, 2)
    pos = np.minimum(np.searchsorted(ids, id_pairs), max(ids.size - 1, 0))
    if not ids.size:
        return np.zeros((0, 2), np.int64)
    held = (ids[pos] == id_pairs).all(axis=1)
    return pos[held]


def phash_codes(view, skip_low_information: bool = False, only_low_information: bool = False):
    """(ids, uint64 codes) of one shard's samples with a pHash (with skip_low_information, only those not flagged
    low_information; with only_low_information, only the flagged ones): the Hamming primitive's shard (a task)."""
    flag = skip_low_information or only_low_information
    t = view.read(["phash", *(["low_information"] if flag else [])])
    valid = t.column("phash").is_valid().to_numpy(zero_copy_only=False)
    if flag:
        low = pc.fill_null(t.column("low_information"), False).to_numpy(zero_copy_only=False)
        valid &= low if only_low_information else ~low
    sub = t.filter(pa.array(valid)) if not valid.all() else t
    codes = pc.cast(sub.column("phash"), pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    return sub.column(SAMPLE_ID).to_numpy().astype(np.int64), codes
