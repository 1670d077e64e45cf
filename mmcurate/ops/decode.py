"""Batched image decode (JPEG, PNG, WebP) with per-sample statuses.

CPU decoding goes through libjpeg-turbo / libpng / libwebp in the native core and reproduces Pillow:
``mode="RGB"`` equals ``np.asarray(Image.open(f).convert("RGB"))`` and ``mode="L"`` equals
``.convert("L")`` (after ``ImageOps.exif_transpose`` when ``exif=True``). The format is sniffed from
the magic bytes, never from a file name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import (
    INT32_MAX,
    as_blob_list,
    call_native,
    check_int,
    check_max_pixels,
    check_threads,
    is_integer,
)
from mmcurate.ops.codes import DECODE_MODES, DEFAULT_MAX_PIXELS
from mmcurate.ops.decode_result import DecodeResult

__all__ = ["DecodeResult", "decode_images", "probe_images", "DEFAULT_MAX_PIXELS", "MODES"]

MODES = DECODE_MODES


def _parse_mode(mode: str) -> int:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    return MODES[mode]


def _parse_target_size(target_size) -> tuple[int, int]:
    """None -> (0, 0); int s -> (s, s); (h, w) -> (h, w). Sizes must be positive ints that fit the native int."""
    if target_size is None:
        return 0, 0
    if is_integer(target_size):
        h = w = int(target_size)
    elif isinstance(target_size, (tuple, list)) and len(target_size) == 2 and all(is_integer(v) for v in target_size):
        h, w = (int(v) for v in target_size)
    else:
        raise TypeError(f"target_size must be None, an int or an (h, w) pair of ints, got {target_size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"target_size must be positive, got {target_size!r}")
    check_int(h, "target_size height", 1, INT32_MAX)
    check_int(w, "target_size width", 1, INT32_MAX)
    return h, w


def decode_images(
    blobs: Sequence[bytes | bytearray | memoryview | np.ndarray | None],
    mode: str = "RGB",
    device: str = "auto",
    target_size: int | tuple[int, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif: bool = True,
    fast: bool = False,
    num_threads: int | None = None,
) -> DecodeResult:
    """Decode a batch of encoded images. One bad sample never fails the batch: its status says why.

    Args:
        blobs: encoded images (bytes, bytearray, memoryview or 1-D uint8 arrays; None counts as empty).
        mode: "RGB" (3 channels), "L" (Pillow's luma from RGB, 1 channel) or "luma" (1 channel; a JPEG's
            decoded Y plane without chroma decoding: faster, close to but not exactly Pillow's "L").
        device: "auto", "cpu" or "cuda".
        target_size: None (full size), an int or (h, w). JPEGs are then decoded in the DCT domain at the
            smallest scale M/8 whose output is still *at least* that size (sides matched after EXIF
            rotation); other formats decode at full size. Exact sizing is resize's job.
        max_pixels: samples whose header declares more pixels are refused (status too_large) before any
            pixel memory is allocated. None or 0 disables the limit.
        exif: apply the EXIF orientation (as ImageOps.exif_transpose does). The tag is reported either way.
        fast: JPEG only: faster integer IDCT and plain chroma upsampling (no longer Pillow-exact).
        num_threads: CPU threads, 1..1024 (None: all cores, or MMCURATE_NUM_THREADS).
    """
    code = _parse_mode(mode)
    min_h, min_w = _parse_target_size(target_size)
    max_pixels = check_max_pixels(max_pixels)
    threads = check_threads(num_threads)
    items = as_blob_list(blobs)
    if resolve_device(device) == "cuda":
        from mmcurate.ops import _cuda

        size = None if target_size is None else (min_h, min_w)
        return _cuda.decode_images(items, mode, size, int(max_pixels), bool(exif))
    images, (status, errors, formats, sizes, orientation), _scales = call_native(
        native().decode_images, items, code, min_h, min_w, max_pixels, bool(exif), bool(fast), threads
    )
    return DecodeResult(list(images), status, list(errors), list(formats), sizes, orientation)


def probe_images(blobs, with_errors: bool = False) -> tuple:
    """Header-only probe: (status int8[n], formats list, sizes int32[n, 2] as (h, w), orientation int8[n]);
    with_errors=True returns (status, errors, formats, sizes, orientation), errors holding each failure's reason.

    Reads no pixel data, so a file that is truncated after its header probes ok."""
    items = as_blob_list(blobs)
    status, errors, formats, sizes, orientation = call_native(native().probe_images, items)
    if with_errors:
        return status, list(errors), list(formats), sizes, orientation
    return status, list(formats), sizes, orientation
