"""Resize and gray conversion, bit-exact with Pillow (``Image.resize`` / ``convert("L")``) on CPU.

``resize_images(..., mode="shortest")`` is CLIP's preprocessing geometry: torchvision's
``Resize(size)`` on a PIL image (shorter side -> size, longer side -> ``int(size * long / short)``)
followed by ``CenterCrop(size)``; only the cropped pixels are computed, and they are identical to
the full resize followed by the crop. 2- and 4-channel inputs are LA / RGBA: like Pillow, colour is
premultiplied by alpha while filtering (except for "nearest").
"""

from __future__ import annotations

import numpy as np

from mmcurate._native import native
from mmcurate.ops._device import resolve_device
from mmcurate.ops._inputs import as_image_list, call_native, check_threads, is_integer, native_ready
from mmcurate.ops.codes import INTERPOLATIONS, RESIZE_MODES

#: Largest output side resize_images accepts (JPEG's limit; n x side x side x c bytes are allocated).
MAX_SIDE = 65535

__all__ = ["resize_images", "to_gray", "INTERPOLATIONS", "MODES"]

MODES = RESIZE_MODES


def _parse_size(size, mode: str) -> tuple[int, int]:
    if is_integer(size):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(is_integer(v) for v in size):
        h, w = (int(v) for v in size)
    else:
        raise TypeError(f"size must be an int or an (h, w) pair of ints, got {size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"size must be at most {MAX_SIDE} per side, got {size!r}")
    if mode == "shortest" and h != w:
        raise ValueError(f"mode='shortest' resizes the shorter side to one size and crops a square; got size={size!r}")
    return h, w


def _channels(a: np.ndarray) -> int:
    return 1 if a.ndim == 2 else a.shape[2]


def resize_images(
    images, size, interpolation: str = "bicubic", mode: str = "shortest", device: str = "auto", num_threads=None
) -> np.ndarray:
    """Resize decoded images to one size; returns uint8 ``(n, h, w, c)``.

    images: a list of uint8 arrays (H, W) or (H, W, C), sizes may differ, or one (N, H, W, C) array.
        All must have the same channel count (gray images give c=1).
    size: int or (h, w). mode "shortest" needs a square size; "squash" resizes straight to (h, w).
    interpolation: "nearest", "area", "bilinear", "hamming", "bicubic" or "lanczos" (Pillow's filters).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    size_h, size_w = _parse_size(size, mode)
    # One rule for every op (ops._inputs.check_threads): None = all cores, else 1..MAX_THREADS. resize, the
    # hashes and phash_bytes on the CPU used to take 0 as "all cores" too; decode, the GPU ops and hamming
    # refused it, and their tests expect that, so 0 is refused here as well (pass None for all cores).
    threads = check_threads(num_threads)
    if resolve_device(device, data=images) == "cuda":
        from mmcurate.ops import _cuda

        return _cuda.resize_images(images, size, interpolation, mode)
    imgs = [native_ready(a) for a in as_image_list(images)]
    if not imgs:
        return np.empty((0, size_h, size_w, 3), dtype=np.uint8)
    channels = {_channels(a) for a in imgs}
    if len(channels) > 1:
        raise ValueError(
            f"images must all have the same number of channels, got {sorted(channels)}; "
            "convert them first (e.g. to_gray, or drop alpha)"
        )
    return call_native(
        native().resize_images, imgs, size_h, size_w, INTERPOLATIONS[interpolation], MODES[mode], threads
    )


def to_gray(images):
    """Pillow's ``convert("L")``: RGB / RGBA -> (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, LA -> L,
    gray -> copy. A list gives a list of (H, W) arrays; an (N, H, W, C) array gives an (N, H, W) array."""
    imgs = [native_ready(a) for a in as_image_list(images)]
    out = native().to_gray(imgs)
    if isinstance(images, np.ndarray):
        return np.stack(out) if out else np.empty((0,) + images.shape[1:3], dtype=np.uint8)
    return list(out)
