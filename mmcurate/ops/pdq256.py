"""PDQ-256 (Meta's perceptual hash), bit-exact with the ``pdqhash`` package on the same RGB pixels.

Code layout, ``uint8[n, 32]`` (``uint8[n, 8, 32]`` with ``dihedral=True``): each code is the 256-bit
big-endian integer whose bit k is DCT coefficient k, so ``np.unpackbits(code)`` equals the bit vector
``pdqhash.compute(rgb)[0]`` and ``code.tobytes().hex()`` is Meta's 64-digit hex string. Quality is
pdqhash's 0..100 gradient score. Dihedral variants come in pdqhash.compute_dihedral's order: original,
rotate 90, rotate 180, rotate 270, flip x, flip y, flip +1 (transpose), flip -1 (anti-transpose).

Pixels: RGB(A) as pdqhash sees them (alpha ignored); a gray image is hashed as R = G = B. Images with a
side < 5 get the zero code and quality 0, as in the reference. One reference quirk is reproduced, not
fixed: pdqhash.compute takes an image of exactly 64 x 64 unfiltered while compute_dihedral filters it, so
for such images ``pdq(x)`` and ``pdq(x, dihedral=True)[:, 0]`` can differ, each equal to its reference.
Float rounding: every step repeats the reference's float32 operations in its order, each product and sum
rounded on its own (no FMA), and the luma is pdqhash's numpy float64 expression cast to float32, so no bit
is left to rounding differences: none was found on the tests' images, ties included (flat images). Two
caveats, both about the reference rather than this code: a pdqhash built with FMA contraction (some
non-x86 compilers' default) rounds its sums differently, and Meta's C++ command-line tools compute luma
with float32 coefficients, which can move a near-median bit against the Python package.
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import (
    as_blob_list,
    as_image_list,
    call_native,
    check_int,
    check_max_pixels,
    check_threads,
    native_ready,
)
from mmcurate.ops.codes import DEFAULT_MAX_PIXELS

__all__ = ["pdq", "pdq_bytes", "PdqResult", "PdqBytesResult", "pdq_to_hex", "PDQ_FAST_MIN_SIDE"]

#: fast mode: JPEGs are decoded at the smallest DCT scale keeping both sides >= this (csrc kPdqFastMinSide).
PDQ_FAST_MIN_SIDE = 128


class PdqResult:
    """PDQ codes and quality of decoded images. Unpacks as ``codes, quality = result``.

    codes    uint8[n, 32], or uint8[n, 8, 32] with dihedral=True (layout: module docstring)
    quality  int32[n], 0..100
    """

    __slots__ = ("codes", "quality")

    def __init__(self, codes: np.ndarray, quality: np.ndarray):
        self.codes, self.quality = codes, quality

    def __iter__(self):
        return iter((self.codes, self.quality))

    def __repr__(self) -> str:
        return f"PdqResult(n={len(self.codes)})"


class PdqBytesResult:
    """PDQ of encoded images with per-sample statuses. Unpacks as ``codes, quality, status = result``.

    codes    uint8[n, 32] (or [n, 8, 32]), zero where decoding failed
    quality  int32[n], 0 where decoding failed
    status   int8[n] of :class:`mmcurate.ops.Status` values
    errors   the reason for each failure, None where ok
    phash    uint64[n] pHash of the same decoded pixels with phash=True (0 where decoding failed), uint64[n, 8]
             (one per transform) with dihedral="pixels", else None
    detail   uint8[n, 512] local-detail grid of the same decode with detail=True (mmcurate.curate.local_detail),
             else None
    luma     with luma_side > 0, per image the uint8[h, w] luma thumbnail of the same decode (None where decoding
             failed), else None
    """

    __slots__ = ("codes", "quality", "status", "errors", "phash", "detail", "luma")

    def __init__(
        self,
        codes: np.ndarray,
        quality: np.ndarray,
        status: np.ndarray,
        errors: list,
        phash=None,
        detail=None,
        luma=None,
    ):
        self.codes, self.quality, self.status, self.errors = codes, quality, status, errors
        self.phash, self.detail, self.luma = phash, detail, luma

    def __iter__(self):
        return iter((self.codes, self.quality, self.status))

    def __repr__(self) -> str:
        return f"PdqBytesResult(n={len(self.codes)}, failed={int(np.count_nonzero(self.status))})"


def pdq(images, dihedral: bool = False, device: str = "auto", num_threads=None) -> PdqResult:
    """PDQ-256 of uint8 images (H, W[, C]), C in 1..4; equal to ``pdqhash.compute`` (or ``compute_dihedral``)
    of the RGB pixels. device="cuda" runs the GPU twin, equal to the CPU by construction."""
    threads = check_threads(num_threads)
    if resolve_device(device, data=images) == "cuda":
        from mmcurate.ops import _cuda

        codes, quality = _cuda.pdq_images(images, bool(dihedral))
        return PdqResult(codes, quality)
    imgs = [native_ready(a) for a in as_image_list(images)]
    codes, quality = call_native(native().pdq_images, imgs, bool(dihedral), threads)
    return PdqResult(codes, quality)


def pdq_bytes(
    blobs,
    exact: bool = True,
    dihedral: bool | str = False,
    device: str = "cpu",
    exif: bool = True,
    num_threads=None,
    fast_min_side: int = PDQ_FAST_MIN_SIDE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    phash: bool = False,
    detail: bool = False,
    luma_side: int = 0,
) -> PdqBytesResult:
    """Decode and PDQ-hash encoded images (JPEG, PNG, WebP) in one pass: one decode per image, pixels never
    reach Python. The statuses are those of a full decode (as phash_bytes'), so one call serves integrity
    checking too.

    exact=True: Pillow-exact RGB decode at full size; codes and quality equal
        ``pdqhash.compute(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(b))).convert("RGB")))``
        (without the transpose when exif=False).
    exact=False: throughput mode. JPEGs are decoded from the Y plane only (JPEG's Y is PDQ's luma up to
        rounding), with the fast IDCT, at the smallest DCT scale keeping both sides >= fast_min_side; other
        formats as exact. Codes are then close to, not equal to, the exact ones (tests measure the distance).
    phash=True: also the 64-bit pHash of the same decoded pixels, so integrity, pHash and PDQ cost one decode;
        in exact mode it equals ``ops.phash_bytes(exact=True)`` (imagehash.phash of the image Pillow opens).
    dihedral: True gives pdqhash.compute_dihedral's 8 codes (DCT sign flips of one hash); "pixels" the PDQ of the 8
        transformed pixel arrays (``pdqhash.compute`` of each rotation and flip, mmcurate.reference.TRANSFORMS'
        order, ``pdq(reference.dihedral(pixels))``): a flipped or rotated copy's own code lands ~2 bits from the
        matching one, against 14-16 for the DCT variants. With phash=True, then, the pHash of each transform too.
    detail=True: also the local-detail grid of the same decode (``mmcurate.curate.local_detail.detail_grid``, its
        oracle, to within 1 of 255 where a cell's value rounds at .5).
    luma_side > 0: also each image's luma (PDQ's weights) area-averaged so its longer side is at most luma_side
        (never enlarged; sides rounded half to even), uint8[h, w] per image: what curate.keypoints finds keypoints
        on, from the same decode (``curate.keypoints.luma_thumbnail_reference`` is its oracle, to within 1).
    device: the fused path runs on the CPU ("auto" and "cpu"); decoded images can go to pdq(device="cuda").
    """
    if device not in ("auto", "cpu"):
        raise ValueError(f"pdq_bytes runs on the CPU (device='cpu' or 'auto'), got device={device!r}")
    threads = check_threads(num_threads)
    items = as_blob_list(blobs)
    limit = check_max_pixels(max_pixels)
    side = check_int(fast_min_side, "fast_min_side", 64, 2**31 - 1)
    luma_side = check_int(luma_side, "luma_side", 0, 1 << 16)
    if dihedral not in (False, True, "pixels"):
        raise ValueError(f"dihedral must be False, True or 'pixels', got {dihedral!r}")
    codes, quality, status, errors, phashes, grids, luma = call_native(
        native().pdq_bytes,
        items,
        bool(exact),
        bool(dihedral),
        bool(exif),
        threads,
        side,
        limit,
        bool(phash),
        dihedral == "pixels",
        bool(detail),
        luma_side,
    )
    return PdqBytesResult(codes, quality, status, errors, phashes, grids, luma)


def pdq_to_hex(codes) -> list[str]:
    """uint8[..., 32] codes -> Meta's 64-digit lowercase hex strings (one per code, in row-major order)."""
    arr = np.asarray(codes)
    if arr.dtype != np.uint8 or arr.ndim < 1 or arr.shape[-1] != 32:
        raise TypeError(f"codes must be uint8 with a last axis of 32, got {arr.dtype} {arr.shape}")
    return [row.tobytes().hex() for row in arr.reshape(-1, 32)]
