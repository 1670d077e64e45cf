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
from mmcurate.ops._inputs import call_native, check_max_pixels, check_threads

# The names and native codes of the decode modes, resize filters and modes and hash kinds: the CPU ops' tables.
from mmcurate.ops.codes import DECODE_MODES as _DECODE_MODES
from mmcurate.ops.codes import HASH_KINDS as _HASH_KINDS
from mmcurate.ops.codes import INTERPOLATIONS as _INTERPOLATIONS
from mmcurate.ops.codes import RESIZE_MODES as _RESIZE_MODES
from mmcurate.ops.decode_result import DecodeResult

__all__ = [
    "DeviceArray",  # noqa: F822 - served by the module's __getattr__ (it needs the native module)
    "to_device",
    "nvjpeg_info",
    "hamming_pairs",
    "hamming_knn",
    "decode_images",
    "resize_images",
    "hash_images",
    "phash_bytes",
]

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


@functools.cache
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


def decode_images(
    blobs,
    mode: str,
    target_size,
    max_pixels: int,
    exif: bool,
    *,
    stream: int | None = None,
    num_threads: int | None = None,
):
    """GPU twin of ops.decode_images: a DecodeResult whose images are DeviceArrays (H, W, C) uint8.

    JPEGs are decoded by nvJPEG; other formats, JPEGs nvJPEG does not support (CMYK, 12-bit, ...) and any
    sample it fails on are decoded by the CPU decoder and uploaded, so statuses and errors are the CPU's.
    nvJPEG's colour conversion differs slightly from libjpeg's: pixels match the CPU decode to a mean
    absolute difference <= 2 (max <= 4), not bit for bit."""
    global _warned_no_nvjpeg
    if mode not in _DECODE_MODES:
        raise ValueError(f"mode must be one of {sorted(_DECODE_MODES)}, got {mode!r}")
    min_h, min_w = (0, 0) if target_size is None else (int(target_size[0]), int(target_size[1]))
    info = nvjpeg_info()
    if not info["loaded"] and not _warned_no_nvjpeg and native().cuda_device_count() > 0:
        _warned_no_nvjpeg = True
        warnings.warn(
            f"nvJPEG unavailable ({info['error'].splitlines()[0]}): device='cuda' decodes on the CPU "
            "and uploads the pixels",
            RuntimeWarning,
            stacklevel=3,
        )
    images, status, errors, formats, sizes, orientation, _on_gpu = call_native(
        native().cuda_decode_images,
        blobs,
        _DECODE_MODES[mode],
        min_w,
        min_h,
        check_max_pixels(max_pixels),
        bool(exif),
        False,
        stream,
        check_threads(num_threads),
    )
    ok = status == 0
    return DecodeResult(
        list(images),
        status,
        [None if good else err for good, err in zip(ok, errors)],
        [_FORMAT_NAMES[f] if 0 <= f < len(_FORMAT_NAMES) else None for f in formats],
        sizes,
        orientation,
    )


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise TypeError(f"size must be an int or an (h, w) pair, got {size!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def resize_images(images, size, interpolation: str = "bicubic", mode: str = "shortest", *, stream: int | None = None):
    """GPU twin of ops.resize_images, bit-exact with it: uint8 (n, h, w, c).

    images: one (N, H, W[, C]) array or a list of (H, W[, C]) arrays of any sizes, on the host or the GPU.
    Returns a DeviceArray when the input was on the GPU, a numpy array when it was host data."""
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    if mode not in _RESIZE_MODES:
        raise ValueError(f"mode must be one of {sorted(_RESIZE_MODES)}, got {mode!r}")
    h, w = _size_hw(size)
    if isinstance(images, (list, tuple)) and len(images) == 0:
        return np.empty((0, h, w, 3), dtype=np.uint8)
    out, inputs_were_host = native().cuda_resize_images(
        images, h, w, _INTERPOLATIONS[interpolation], _RESIZE_MODES[mode], stream
    )
    return out.numpy() if inputs_were_host else out


def hash_images(images, kind: str, *, stream: int | None = None) -> np.ndarray:
    """GPU twin of the ops' phash/dhash/ahash/whash: np.uint64[n], bit-exact with the CPU on the same pixels."""
    if kind not in _HASH_KINDS:
        raise ValueError(f"kind must be one of {_HASH_KINDS}, got {kind!r}")
    if isinstance(images, (list, tuple)) and len(images) == 0:
        return np.zeros(0, dtype=np.uint64)
    return native().cuda_hash_images(images, kind, stream)


def pdq_images(images, dihedral: bool = False, *, stream: int | None = None):
    """GPU twin of ops.pdq: (codes np.uint8[n, 32] or [n, 8, 32], quality np.int32[n]), equal to the CPU's."""
    if isinstance(images, (list, tuple)) and len(images) == 0:
        shape = (0, 8, 32) if dihedral else (0, 32)
        return np.zeros(shape, dtype=np.uint8), np.zeros(0, dtype=np.int32)
    return native().cuda_pdq_images(images, bool(dihedral), stream)


def image_quality(images, *, stream: int | None = None):
    """GPU twin of ops.image_quality: (float32[n, 7] signals, bool[n] low_information), as the CPU's."""
    if isinstance(images, (list, tuple)) and len(images) == 0:
        return np.zeros((0, 7), dtype=np.float32), np.zeros(0, dtype=bool)
    return native().cuda_image_quality(images, stream)


def phash_bytes(
    blobs,
    exact: bool = True,
    *,
    exif: bool = True,
    stream: int | None = None,
    num_threads: int | None = None,
    with_errors: bool = False,
):
    """GPU twin of ops.phash_bytes: (codes np.uint64[n], status np.int8[n]), plus the decoder's error
    messages (None where ok) with with_errors=True.

    Images are decoded on the GPU (nvJPEG; CPU fallback per sample) and hashed there. Statuses are the CPU
    decoder's; codes of nvJPEG-decoded JPEGs are within a few bits of the CPU's (nvJPEG's IDCT and colour
    conversion are not libjpeg's), codes of CPU-decoded samples (PNG, WebP, CMYK JPEG, ...) are equal."""
    nvjpeg_info()
    codes, status, errors = call_native(
        native().cuda_phash_bytes, blobs, bool(exact), bool(exif), stream, check_threads(num_threads)
    )
    if with_errors:
        return codes, status, [e if s != 0 else None for e, s in zip(errors, status)]
    return codes, status
