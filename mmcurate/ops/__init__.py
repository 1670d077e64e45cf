"""The functional kernel API. Every op takes device="auto"|"cpu"|"cuda".

Names resolve lazily to their area module, so importing mmcurate.ops loads no native code.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    # decode
    "Status": "mmcurate.ops.status",
    "DecodeResult": "mmcurate.ops.decode",
    "decode_images": "mmcurate.ops.decode",
    "probe_images": "mmcurate.ops.decode",
    # resize
    "resize_images": "mmcurate.ops.resize",
    "to_gray": "mmcurate.ops.resize",
    # perceptual hashes
    "phash": "mmcurate.ops.hashes",
    "dhash": "mmcurate.ops.hashes",
    "ahash": "mmcurate.ops.hashes",
    "whash": "mmcurate.ops.hashes",
    "phash_bytes": "mmcurate.ops.hashes",
    "hash_to_hex": "mmcurate.ops.hashes",
    # Hamming search
    "hamming_pairs": "mmcurate.ops.hamming",
    "hamming_knn": "mmcurate.ops.hamming",
    "hamming_distance": "mmcurate.ops.hamming",
    # device
    "resolve_device": "mmcurate.ops._device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmcurate.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
