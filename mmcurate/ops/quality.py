"""Image-quality signals: sharpness, brightness, contrast, colourfulness, border and flat fractions, luma entropy
and a low-information flag, one set per image.

They come out of the fused decode (``phash_bytes(..., quality=True)``: the decode that validates and pHashes an
image also measures it, no second decode) or from decoded pixels (:func:`image_quality`). The definitions are
csrc/kernels/quality.h's; :mod:`mmcurate.ops.quality_reference` restates them in NumPy (the tests' oracle).

Canonical image: the decoded channels (R, G, B, or a JPEG's Y, Cb, Cr) are area-averaged to 64 x 64 and turned
into BT.601 luma (JPEG: Y itself) and the opponent colour channels rg = R - G, yb = (R + G) / 2 - B (for a JPEG,
from Cb and Cr, linearly: before the decoder's clamping to 0..255). Every signal is measured there, so a JPEG
decoded at a reduced DCT scale and a PNG decoded at full size give close values for the same picture (aspect ratio
is not kept: fractions are of the image's area).

==================  =========================================================================================
sharpness           variance of the 4-neighbour Laplacian of the luma binned to 32 x 32 (2 x 2 cell means;
                    blur lowers it)
brightness          mean luma, 0..255
contrast            luma standard deviation
colourfulness       Hasler & Süsstrunk's M: sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)
border_fraction     share of the area in uniform bars along the edges (letterbox / pillarbox padding), 0..1
flat_fraction       share of cells whose 3 x 3 neighbourhood spans <= 2 luma levels, 0..1
entropy             bits of the 256-bin histogram of the rounded luma, 0..8
low_information     entropy < 2 or flat_fraction > 0.9 or border_fraction > 0.75: blank, flat, placeholder or
                    mostly padding (thresholds measured: benchmarks/README.md, "Image quality")
==================  =========================================================================================

Values are float32 (low_information bool). The CUDA twin (device="cuda") computes the canonical planes bit for bit
as the CPU; the statistics agree within float rounding of the device's log2 (tests: rtol 1e-5).
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import as_image_list, call_native, check_threads, native_ready

__all__ = ["image_quality", "ImageQuality", "QUALITY_SIGNALS", "QUALITY_COLUMNS", "CANONICAL_SIDE"]

#: The float signals, in the native result's column order.
QUALITY_SIGNALS = (
    "sharpness",
    "brightness",
    "contrast",
    "colourfulness",
    "border_fraction",
    "flat_fraction",
    "entropy",
)
#: The signals and the flag: the columns the image_quality stage adds.
QUALITY_COLUMNS = QUALITY_SIGNALS + ("low_information",)
#: Side of the canonical image the signals are measured on (csrc kQualitySide).
CANONICAL_SIDE = 64


class ImageQuality:
    """Quality signals of n images: one float32[n] array per signal (attributes named as QUALITY_SIGNALS) and
    ``low_information`` bool[n]. Images that failed to decode hold zeros (their status says so)."""

    __slots__ = QUALITY_COLUMNS

    def __init__(self, values: np.ndarray, low_information: np.ndarray):
        values = np.asarray(values, dtype=np.float32).reshape(-1, len(QUALITY_SIGNALS))
        for k, name in enumerate(QUALITY_SIGNALS):
            setattr(self, name, np.ascontiguousarray(values[:, k]))
        self.low_information = np.asarray(low_information, dtype=bool)

    def __len__(self) -> int:
        return len(self.low_information)

    def columns(self) -> dict[str, np.ndarray]:
        """{column name: array} in QUALITY_COLUMNS order."""
        return {name: getattr(self, name) for name in QUALITY_COLUMNS}

    def __repr__(self) -> str:
        return f"ImageQuality(n={len(self)}, low_information={int(self.low_information.sum())})"


def image_quality(images, device: str = "auto", num_threads=None) -> ImageQuality:
    """Quality signals of decoded uint8 images (H, W[, C]), C in 1..4 (RGB(A) or gray; alpha ignored).
    device="cuda" runs the GPU twin. Encoded bytes: ``phash_bytes(blobs, quality=True)`` measures them in the
    decode that validates and hashes them."""
    threads = check_threads(num_threads)
    if resolve_device(device, data=images) == "cuda":
        from mmcurate.ops import _cuda

        return ImageQuality(*_cuda.image_quality(images))
    imgs = [native_ready(a) for a in as_image_list(images)]
    return ImageQuality(*call_native(native().image_quality_images, imgs, threads))
