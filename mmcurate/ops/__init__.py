"""The functional kernel API. Every op takes device="auto"|"cpu"|"cuda".

Names resolve lazily to their area module, so importing mmcurate.ops loads no native code.
"""

from __future__ import annotations

from mmcurate._lazy import lazy_exports

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
    # PDQ-256
    "pdq": "mmcurate.ops.pdq256",
    "pdq_bytes": "mmcurate.ops.pdq256",
    "pdq_to_hex": "mmcurate.ops.pdq256",
    # image quality
    "image_quality": "mmcurate.ops.quality",
    "ImageQuality": "mmcurate.ops.quality",
    # Hamming search
    "hamming_pairs": "mmcurate.ops.hamming",
    "hamming_knn": "mmcurate.ops.hamming",
    "hamming_distance": "mmcurate.ops.hamming",
    "hamming_join_plan": "mmcurate.ops.hamming",
    "hamming_range": "mmcurate.ops.hamming",
    "HammingRangeIndex": "mmcurate.ops.hamming",
    # device
    "resolve_device": "mmcurate.ops._device",
}

__getattr__, __dir__, __all__ = lazy_exports("mmcurate.ops", globals(), _EXPORTS)
