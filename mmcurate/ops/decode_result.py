"""What a batch decode returns, on either device (ops.decode on the CPU, ops._cuda on the GPU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DecodeResult:
    """Columnar result of a batch decode; index i describes blobs[i].

    images        list of HxWxC uint8 arrays (always 3-D; C=3 for "RGB", 1 for "L"/"luma"), None where failed
    status        int8[n] of :class:`mmcurate.ops.Status` values
    errors        the reason for each failure, None where ok
    formats       "jpeg" / "png" / "webp", None where the bytes are not a known format
    source_sizes  int32[n, 2], (height, width) as stored in the header (before orientation); 0 if unreadable
    orientation   int8[n], the EXIF orientation 1..8 (1 when absent), whether or not it was applied
    """

    images: list
    status: np.ndarray
    errors: list
    formats: list
    source_sizes: np.ndarray
    orientation: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the samples that decoded."""
        return self.status == 0

    def __len__(self) -> int:
        return len(self.images)
