"""64-bit perceptual hashes (pHash, dHash, aHash, wHash), bit-exact with imagehash 4.3.2.

``f"{code:016x}" == str(imagehash.phash(Image.fromarray(image)))``: the same Pillow ``convert("L")``,
LANCZOS resize and thresholds, with the first element of imagehash's bit matrix as the most
significant bit. One documented exception for pHash: scipy's DCT (pocketfft) and ours differ by
~1e-13, so a bit can differ only where a DCT coefficient equals the median in exact arithmetic
(constant or exactly symmetric images). Our result is deterministic there. wHash replicates
PyWavelets' floating-point operation order and has no such exception.
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import as_image_list, call_native, check_threads, native_ready
from mmcurate.ops.codes import DEFAULT_MAX_PIXELS, HASH_KINDS

__all__ = ["phash", "dhash", "ahash", "whash", "hash_to_hex", "phash_bytes", "PhashBytesResult", "KINDS"]

KINDS = HASH_KINDS


def _hash(images, kind: str, device: str, num_threads) -> np.ndarray:
    threads = check_threads(num_threads)
    if resolve_device(device, data=images) == "cuda":
        from mmcurate.ops import _cuda

        return _cuda.hash_images(images, kind)
    imgs = [native_ready(a) for a in as_image_list(images)]
    return call_native(native().hash_images, imgs, kind, threads)


def phash(images, device: str = "auto", num_threads=None) -> np.ndarray:
    """imagehash.phash: L -> 32x32 LANCZOS -> DCT-II (axis 0, then 1) -> top-left 8x8 > median. uint64[n]."""
    return _hash(images, "phash", device, num_threads)


def dhash(images, device: str = "auto", num_threads=None) -> np.ndarray:
    """imagehash.dhash: L -> 9 wide x 8 high LANCZOS -> right > left. uint64[n]."""
    return _hash(images, "dhash", device, num_threads)


def ahash(images, device: str = "auto", num_threads=None) -> np.ndarray:
    """imagehash.average_hash: L -> 8x8 LANCZOS -> > mean. uint64[n]."""
    return _hash(images, "ahash", device, num_threads)


def whash(images, device: str = "auto", num_threads=None) -> np.ndarray:
    """imagehash.whash (haar, remove_max_haar_ll): L -> s x s LANCZOS with s = max(2**floor(log2(min side)), 8)
    -> Haar LL removed -> 8x8 LL > median. uint64[n]. Cost grows with the image (s is up to the short side)."""
    return _hash(images, "whash", device, num_threads)


def hash_to_hex(codes) -> list[str]:
    """uint64 codes -> 16-digit lowercase hex strings, as str(imagehash.ImageHash)."""
    arr = np.asarray(codes)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"codes must be integers (uint64), got {arr.dtype}")
    return [f"{int(c):016x}" for c in arr.astype(np.uint64, copy=False).ravel()]


class PhashBytesResult:
    """pHash codes of encoded images with per-sample statuses. Unpacks as ``codes, status = result``.

    codes   uint64[n], 0 where decoding failed
    status  int8[n] of :class:`mmcurate.ops.Status` values
    errors  the reason for each failure, None where ok
    quality :class:`mmcurate.ops.quality.ImageQuality` of the same decode with quality=True, else None
    """

    __slots__ = ("codes", "status", "errors", "quality")

    def __init__(self, codes: np.ndarray, status: np.ndarray, errors: list, quality=None):
        self.codes, self.status, self.errors, self.quality = codes, status, errors, quality

    def __iter__(self):
        return iter((self.codes, self.status))

    def __repr__(self) -> str:
        return f"PhashBytesResult(n={len(self.codes)}, failed={int(np.count_nonzero(self.status))})"


def phash_bytes(
    blobs,
    exact: bool = True,
    device: str = "auto",
    exif: bool = True,
    num_threads=None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    quality: bool = False,
) -> PhashBytesResult:
    """Decode and pHash encoded images (JPEG, PNG, WebP) in one pass; pixels never reach Python.

    exact=True: full Pillow-exact decode to L, so codes equal
        ``imagehash.phash(ImageOps.exif_transpose(Image.open(io.BytesIO(b))))`` (without the transpose when
        exif=False), up to the pHash tie caveat of this module.
    exact=False: throughput mode. JPEGs are decoded at a reduced DCT scale (>= 64 px per side), from the Y
        plane only, with the fast IDCT; codes are then close to, not equal to, the exact ones (see tests for
        the measured Hamming distances).
    max_pixels: images declaring more pixels in their header are rejected (too_large) before any pixel
        allocation; None or 0: no limit. Because the decode is complete (every entropy-coded coefficient),
        the statuses are those of a full decode: the pipeline's integrity stage validates through this call.
    quality: also measure the image-quality signals (:mod:`mmcurate.ops.quality`) in the same decode, returned
        as ``result.quality``; the codes are unchanged. Fast mode keeps the JPEG chroma at the same reduced DCT
        scale (its IDCT is the extra cost) and decodes other formats as RGB; exact mode decodes RGB and hashes
        its Pillow L. CPU only (device "auto" or "cpu"): on the GPU, decode and call image_quality(device="cuda").
    """
    from mmcurate.ops._inputs import as_blob_list, call_native, check_max_pixels

    threads = check_threads(num_threads)
    items = as_blob_list(blobs)
    limit = check_max_pixels(max_pixels)
    if quality:
        from mmcurate.ops.quality import ImageQuality

        if device not in ("auto", "cpu"):
            raise ValueError(f"phash_bytes(quality=True) runs on the CPU (device='cpu' or 'auto'), got {device!r}")
        codes, status, errors, (values, low) = call_native(
            native().phash_bytes, items, bool(exact), bool(exif), threads, max_pixels=limit, quality=True
        )
        return PhashBytesResult(codes, status, [e if e else None for e in errors], ImageQuality(values, low))
    if resolve_device(device) == "cuda":
        from mmcurate.ops import _cuda

        if limit != DEFAULT_MAX_PIXELS:
            raise ValueError(
                "phash_bytes(device='cuda') uses the decoder's default max_pixels; pass device='cpu' for another limit"
            )
        codes, status, errors = _cuda.phash_bytes(
            items, bool(exact), exif=bool(exif), num_threads=num_threads, with_errors=True
        )
        return PhashBytesResult(codes, status, errors)
    codes, status, errors = call_native(native().phash_bytes, items, bool(exact), bool(exif), threads, max_pixels=limit)
    return PhashBytesResult(codes, status, [e if e else None for e in errors])
