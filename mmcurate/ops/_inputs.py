"""Input normalisation shared by the ops: misuse raises here, with a message naming the argument."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def as_blob_list(blobs, arg: str = "blobs") -> list:
    """A sequence of encoded images -> list of C-contiguous bytes-like objects (zero-copy where possible).

    Accepts bytes, bytearray, memoryview and 1-D uint8 numpy arrays. A single bytes object is rejected
    (a common mistake: pass [data])."""
    if isinstance(blobs, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"{arg} must be a sequence of encoded images; wrap a single image as [{arg}]")
    out = []
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
