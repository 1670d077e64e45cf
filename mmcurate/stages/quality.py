"""Image stage: image_quality (sharpness, brightness, contrast, colourfulness, border and flat fractions, luma
entropy, the low-information flag; optional rejects on them).

The signals come from the decode that validates and pHashes each image (``ops.phash_bytes(quality=True)``):
``integrity`` (full_decode, the default) stores them, and this stage only applies its thresholds to the stored
columns; it decodes itself (the same fast decode) only where they are absent. Definitions: mmcurate.ops.quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.ops.quality import QUALITY_COLUMNS, QUALITY_SIGNALS
from mmcurate.pipeline.params import check_bool, check_threads
from mmcurate.pipeline.stage import MapStage, StageResult, registry
from mmcurate.stages.batch import blob_views, cpu_resources, kept_and_rejected, require_columns, text_only_rows
from mmcurate.stages.image import decode_verdicts
from mmcurate.stages.quality_columns import QUALITY_FAST, has_quality_columns, quality_columns

#: Reasons, in the order a row is checked.
REASONS = ("low_information", "too_dark", "too_bright", "blurry")


@registry.register
class ImageQuality(MapStage):
    """Adds the image-quality columns (``sharpness``, ``brightness``, ``contrast``, ``colourfulness``,
    ``border_fraction``, ``flat_fraction``, ``entropy`` float32; ``low_information`` bool) and, when asked,
    rejects on them. Report only by default: every threshold is null and ``reject_low_information`` false.

    ``min_sharpness`` (reason ``blurry``), ``min_brightness`` (``too_dark``), ``max_brightness`` (``too_bright``),
    ``reject_low_information`` (``low_information``: blank, flat, placeholder or mostly padding). The detail gives
    the value and the threshold; a row failing several rules gets the first of low_information, too_dark,
    too_bright, blurry. Values to start from (benchmarks/README.md, "Image quality": 20 real photos at 512 px vs
    blurred, darkened, brightened copies and generated blank / letterboxed / placeholder images):
    ``min_sharpness: 50`` (passes all 20 sharp photos, the flattest a colour chart at 54; flags half of them
    blurred by a Gaussian of sigma 16 px and 90 % at 24 px: at the 1/8-scale decode only strong blur shows),
    ``min_brightness: 15`` (the darkest real photo, a deep-field sky, measures 19; 90 % of photos darkened to 10 %
    fall below), ``max_brightness: 240`` (none of the photos; 30-50 % of them brightened 2.5-4x).

    The columns come from integrity's fused decode when it ran (full_decode); otherwise this stage decodes the
    images itself, once, rejecting those it cannot decode with the decoder's status. Text-only rows (instruction
    data) pass with null columns."""

    name = "image_quality"
    requires = ("key", "source")

    @dataclass
    class Params:
        min_sharpness: float | None = None
        min_brightness: float | None = None
        max_brightness: float | None = None
        reject_low_information: bool = False
        num_threads: int | None = None

        def validate(self):
            for name in ("min_sharpness", "min_brightness", "max_brightness"):
                v = getattr(self, name)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
                    raise ValueError(f"{name} must be a number or null, got {v!r}")
            lo, hi = self.min_brightness, self.max_brightness
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"min_brightness {lo} is above max_brightness {hi}")
            check_bool("reject_low_information", self.reject_low_information)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        self.resources = cpu_resources(self.params.num_threads)

    def column_fingerprints(self) -> dict[str, dict]:
        return dict.fromkeys(QUALITY_COLUMNS, QUALITY_FAST)

    def reuse(self, batch: pa.Table) -> StageResult:
        """Stored columns: only this run's thresholds are applied again."""
        return self._verdicts(batch, np.zeros(batch.num_rows, bool), [None] * batch.num_rows, [None] * batch.num_rows)

    def process(self, batch: pa.Table) -> StageResult:
        n = batch.num_rows
        text_only = text_only_rows(batch)
        rejected, reasons, details = np.zeros(n, bool), [None] * n, [None] * n
        if not has_quality_columns(batch, text_only):
            batch, rejected, reasons, details = self._measure(batch, text_only)
        return self._verdicts(batch, rejected, reasons, details)

    def _measure(self, batch: pa.Table, text_only: np.ndarray):
        """The columns from this stage's own decode (integrity's fast decode, quality included)."""
        from mmcurate.ops import phash_bytes

        require_columns(batch, self.name, ["image"])
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        result = phash_bytes(
            [b"" if b is None else b for b in blobs],
            exact=False,
            device="cpu",
            quality=True,
            num_threads=self.params.num_threads,
        )
        rejected, reasons, details = decode_verdicts(np.asarray(result.status), result.errors, missing, text_only)
        return quality_columns(batch, result.quality, text_only), rejected, reasons, details

    def _verdicts(self, batch: pa.Table, rejected: np.ndarray, reasons: list, details: list) -> StageResult:
        """The thresholds over the quality columns, after the decode's own rejects."""
        p = self.params
        col = {c: pc.fill_null(batch.column(c), np.nan).to_numpy(zero_copy_only=False) for c in QUALITY_SIGNALS}
        low = pc.fill_null(batch.column("low_information"), False).to_numpy(zero_copy_only=False)
        b, s = col["brightness"], col["sharpness"]
        rules = [
            (
                "low_information",
                low if p.reject_low_information else np.zeros(len(low), bool),
                lambda i: (
                    f"low information: entropy {col['entropy'][i]:.2f} bits, flat {col['flat_fraction'][i]:.2f}, "
                    f"contrast {col['contrast'][i]:.1f}, border {col['border_fraction'][i]:.2f}"
                ),
            ),
            (
                "too_dark",
                _below(b, p.min_brightness),
                lambda i: f"brightness {b[i]:.1f} < min_brightness {p.min_brightness}",
            ),
            (
                "too_bright",
                _above(b, p.max_brightness),
                lambda i: f"brightness {b[i]:.1f} > max_brightness {p.max_brightness}",
            ),
            ("blurry", _below(s, p.min_sharpness), lambda i: f"sharpness {s[i]:.1f} < min_sharpness {p.min_sharpness}"),
        ]
        rejected = rejected.copy()
        for reason, failed, detail in rules:
            for i in np.flatnonzero(failed & ~rejected):
                reasons[i], details[i] = reason, detail(i)
                rejected[i] = True
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


def _below(values: np.ndarray, bound) -> np.ndarray:
    """values < bound (NaN, i.e. no measurement, never fails); all False without a bound."""
    if bound is None:
        return np.zeros(len(values), bool)
    with np.errstate(invalid="ignore"):
        return values < bound


def _above(values: np.ndarray, bound) -> np.ndarray:
    if bound is None:
        return np.zeros(len(values), bool)
    with np.errstate(invalid="ignore"):
        return values > bound
