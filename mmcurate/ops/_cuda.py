"""GPU implementations behind the ops' ``device="cuda"`` branch (imported lazily, inside that branch only).

Each function has the signature of its CPU op's dispatch call (see the op modules) plus an optional
keyword ``stream``: an int ``cudaStream_t`` handle (e.g. ``torch.cuda.current_stream().cuda_stream``) to
queue the work on; without it each call uses a stream of its own and returns completed results.

Inputs may be host arrays (uploaded), :class:`mmcurate._C.DeviceArray`, or any GPU array exposing
``__cuda_array_interface__`` (torch.cuda tensors, CuPy) or a CUDA ``__dlpack__``. Outputs that stay on the
GPU are ``DeviceArray`` objects, which torch/CuPy take without a copy (``torch.from_dlpack(a)``,
``cupy.asarray(a)``); ``.numpy()`` copies one to the host.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import numpy as np

from mmcurate._native import native

__all__ = [
    "DeviceArray",
    "to_device",
    "nvjpeg_info",
    "hamming_pairs",
    "hamming_knn",
    "decode_images",
]

# Native codes (csrc/include/mmcurate/decode.h) <-> the names the CPU decode op uses.
_DECODE_MODES = {"RGB": 0, "L": 1, "luma": 2}
_FORMAT_NAMES = (None, "jpeg", "png", "webp")


def __getattr__(name):
    if name == "DeviceArray":
        return native().DeviceArray
    raise AttributeError(f"module 'mmcurate.ops._cuda' has no attribute {name!r}")


def to_device(array, stream: int | None = None):
    """A DeviceArray copy of a host array or of any CUDA array (CAI / DLPack)."""
    C = native()
    if isinstance(array, np.ndarray):
        return C.DeviceArray.from_host(array, stream)
    return C.DeviceArray.from_device(array, stream)


def _nvjpeg_search_dirs() -> list[str]:
    """Library folders of the nvidia-nvjpeg wheel (nvidia/cu13/lib, older nvidia/nvjpeg/lib), if installed."""
    dirs = []
    explicit = os.environ.get("MMCURATE_NVJPEG_DIR")
    if explicit:
        dirs.append(explicit)
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in list(spec.submodule_search_locations or []) if spec else []:
        for sub in ("cu13/lib", "cu12/lib", "nvjpeg/lib"):
            path = os.path.join(root, sub)
            if os.path.isdir(path):
                dirs.append(path)
    return dirs


@functools.lru_cache(maxsize=None)
def nvjpeg_info() -> dict:
    """Opens libnvjpeg once (dlopen; the wheel's folder first, then the default loader path) and says
    what was found: {'compiled', 'loaded', 'path', 'error', 'version', 'hardware_backend'}."""
    return dict(native().cuda_nvjpeg_load(_nvjpeg_search_dirs()))


def hamming_pairs(codes, max_distance: int, *, stream: int | None = None):
    """GPU twin of ops.hamming_pairs: (pairs int64[m, 2] sorted by (i, j), distances uint8[m])."""
    return native().cuda_hamming_pairs(codes, int(max_distance), stream)


def hamming_knn(codes, k: int, queries=None, *, stream: int | None = None):
    """GPU twin of ops.hamming_knn: (distances int32[nq, k], indices int64[nq, k]), ordered by
    (distance, index), -1 padded; queries=None searches the codes against themselves minus self."""
    return native().cuda_hamming_knn(codes, int(k), queries, stream)


_warned_no_nvjpeg = False


def decode_images(blobs, mode: str, target_size, max_pixels: int, exif: bool, *, stream: int | None = None,
                  num_threads: int | None = None):
    """GPU twin of ops.decode_images: a DecodeResult whose images are DeviceArrays (H, W, C) uint8.

    JPEGs are decoded by nvJPEG; other formats, JPEGs nvJPEG does not support (CMYK, 12-bit, ...) and any
    sample it fails on are decoded by the CPU decoder and uploaded, so statuses and errors are the CPU's.
    nvJPEG's colour conversion differs slightly from libjpeg's: pixels match the CPU decode to a mean
    absolute difference <= 2 (max <= 4), not bit for bit."""
    global _warned_no_nvjpeg
    from mmcurate.ops.decode import DecodeResult

    if mode not in _DECODE_MODES:
        raise ValueError(f"mode must be one of {sorted(_DECODE_MODES)}, got {mode!r}")
    min_h, min_w = (0, 0) if target_size is None else (int(target_size[0]), int(target_size[1]))
    info = nvjpeg_info()
    if not info["loaded"] and not _warned_no_nvjpeg:
        _warned_no_nvjpeg = True
        warnings.warn(f"nvJPEG unavailable ({info['error'].splitlines()[0]}): device='cuda' decodes on the CPU "
                      "and uploads the pixels", RuntimeWarning, stacklevel=3)
    images, status, errors, formats, sizes, orientation, _on_gpu = native().cuda_decode_images(
        blobs, _DECODE_MODES[mode], min_w, min_h, int(max_pixels), bool(exif), False, stream,
        0 if num_threads is None else int(num_threads))
    ok = status == 0
    return DecodeResult(
        list(images),
        status,
        [None if good else err for good, err in zip(ok, errors)],
        [_FORMAT_NAMES[f] if 0 <= f < len(_FORMAT_NAMES) else None for f in formats],
        sizes,
        orientation,
    )
