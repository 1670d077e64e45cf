"""Input normalisation shared by the ops: misuse raises here, with a message naming the argument."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

#: Most threads one kernel call may ask for (csrc/include/mmcurate/parallel.h kMaxThreads).
MAX_THREADS = 1024
#: Largest value of the native int / int64_t parameters.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def is_integer(value) -> bool:
    """An integer (Python or numpy), not a bool: the one rule behind every integer parameter, kernels' and
    recipes' (pipeline.params) alike."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, lo: int, hi: int) -> int:
    """An integer (not a bool, not a float) in lo..hi, as a Python int; raises with a message naming `name`.

    Kernel parameters are checked here, where they are given: a value that does not fit the native type
    would otherwise fail inside pybind11, whose message echoes every argument (input bytes included)."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def check_threads(num_threads) -> int:
    """num_threads: None (0: all cores, or MMCURATE_NUM_THREADS) or an int in 1..MAX_THREADS."""
    return 0 if num_threads is None else check_int(num_threads, "num_threads", 1, MAX_THREADS)


def check_max_pixels(max_pixels) -> int:
    """max_pixels: None or 0 (no limit) or a positive int that fits the native int64."""
    return 0 if max_pixels is None else check_int(max_pixels, "max_pixels", 0, INT64_MAX)


def call_native(fn, *args, **kwargs):
    """Calls a native binding; an argument-conversion failure keeps pybind11's first line only.

    pybind11's "incompatible function arguments" message goes on to list the repr of every argument it
    was invoked with, i.e. whole input images; that must not reach logs or reject files."""
    try:
        return fn(*args, **kwargs)
    except TypeError as exc:
        msg = str(exc)
        if "incompatible function arguments" not in msg:
            raise
        types = ", ".join(type(a).__name__ for a in args)
        raise TypeError(f"{msg.splitlines()[0]} (argument types: {types}; values not shown)") from None


def as_blob_list(blobs, arg: str = "blobs") -> list:
    """A sequence of encoded images -> list of C-contiguous bytes-like objects (zero-copy where possible).

    Accepts bytes, bytearray, memoryview and 1-D uint8 numpy arrays. A single bytes object is rejected
    (a common mistake: pass [data])."""
    if isinstance(blobs, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"{arg} must be a sequence of encoded images; wrap a single image as [{arg}]")
    out: list[bytes | bytearray | memoryview | np.ndarray] = []
    for i, b in enumerate(blobs):
        if isinstance(b, (bytes, bytearray)):
            out.append(b)
        elif isinstance(b, memoryview):
            out.append(b if b.c_contiguous else b.tobytes())
        elif isinstance(b, np.ndarray):
            if b.dtype != np.uint8 or b.ndim != 1:
                raise TypeError(f"{arg}[{i}]: numpy blobs must be 1-D uint8, got {b.dtype} with shape {b.shape}")
            out.append(np.ascontiguousarray(b))
        elif b is None:
            out.append(b"")  # a missing image is an 'empty' sample, not a crash
        else:
            raise TypeError(f"{arg}[{i}]: expected bytes-like, got {type(b).__name__}")
    return out


def native_ready(a: np.ndarray) -> np.ndarray:
    """Kernels take row and pixel strides but need the channels of a pixel adjacent."""
    if a.ndim == 3 and a.shape[2] > 1 and a.strides[2] != 1:
        return np.ascontiguousarray(a)
    return a


def as_image_list(images, arg: str = "images") -> list[np.ndarray]:
    """Decoded images -> list of uint8 arrays of shape (H, W) or (H, W, C) with C in {1, 2, 3, 4}.

    Accepts a list of arrays, or one array of shape (N, H, W[, C]). Strided arrays are accepted as they
    are (kernels take row and pixel strides); other dtypes raise."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(f"{arg}: a batch array must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
        seq: Sequence = list(images)
    else:
        seq = images
    out = []
    for i, im in enumerate(seq):
        if hasattr(im, "__cuda_array_interface__") and not isinstance(im, np.ndarray):
            raise TypeError(f"{arg}[{i}] is a GPU array; pass device='cuda' (or 'auto') to keep it on the GPU")
        a = np.asarray(im)
        if a.dtype != np.uint8:
            raise TypeError(f"{arg}[{i}]: expected uint8 pixels, got {a.dtype}")
        if a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"{arg}[{i}]: channels must be 1, 2, 3 or 4, got shape {a.shape}")
        if a.ndim not in (2, 3):
            raise ValueError(f"{arg}[{i}]: expected (H, W) or (H, W, C), got shape {a.shape}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{arg}[{i}]: empty image of shape {a.shape}")
        if a.strides[-1] < 0 or a.strides[0] < 0 or a.strides[1] < 0:
            a = np.ascontiguousarray(a)
        out.append(a)
    return out
