"""The image-quality columns in a batch: how they are added, recognised and fingerprinted. Shared by the stages that
measure them (integrity, phash_dedup's map part, image_quality)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.ops.quality import QUALITY_COLUMNS
from mmcurate.pipeline.reuse import fingerprint
from mmcurate.stages.batch import masked, with_column

#: The quality columns' fingerprint (pipeline.reuse): measured on integrity's fast decode (phash_bytes
#: exact=False), whichever stage ran it.
QUALITY_FAST = fingerprint("image_quality", exact=False, canonical_side=64)


def quality_columns(batch: pa.Table, quality, text_only: np.ndarray) -> pa.Table:
    """``batch`` with the columns of an ops.quality.ImageQuality (null on text-only rows)."""
    for name, values in quality.columns().items():
        type_ = pa.bool_() if name == "low_information" else pa.float32()
        batch = with_column(
            batch, name, masked(values, text_only, type_) if text_only.any() else pa.array(values, type_)
        )
    return batch


def has_quality_columns(batch: pa.Table, text_only: np.ndarray) -> bool:
    """Whether every quality column is there, null exactly on the text-only rows (a stored measurement)."""
    return all(
        c in batch.column_names
        and np.array_equal(pc.is_null(batch.column(c)).to_numpy(zero_copy_only=False), text_only)
        for c in QUALITY_COLUMNS
    )
