"""The names the kernels take and their native codes, shared by the CPU ops and their CUDA forms (ops._cuda)."""

from __future__ import annotations

#: Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS).
DEFAULT_MAX_PIXELS = 89478485

#: Accepted decode ``mode`` values -> native mode codes (csrc/include/mmcurate/decode.h ColorMode).
DECODE_MODES = {"RGB": 0, "L": 1, "luma": 2}

#: interpolation name -> Pillow's Resampling id ("area" is Pillow's BOX filter).
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "area": 4, "hamming": 5}
#: resize mode -> native mode id (csrc/include/mmcurate/resize.h ResizeMode).
RESIZE_MODES = {"shortest": 0, "squash": 1}

#: The perceptual hashes.
HASH_KINDS = ("phash", "dhash", "ahash", "whash")
