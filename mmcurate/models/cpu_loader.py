"""The native CPU image loader: encoded bytes -> uint8 [n, S, S, 3] batches for a model's preprocessing.

Decode (libjpeg-turbo with DCT-domain downscaling to at least the target size) and the Pillow-exact
resize + center crop run in the native core with the GIL released, so a background thread prepares the
next batch while the model embeds the current one. A sample that does not decode is reported with its
status and reason and left out of its batch; the batch itself always completes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mmcurate.models.preprocess import Preprocess

__all__ = ["NativeImageLoader", "LoadedBatch", "Rejected"]


@dataclass(frozen=True)
class Rejected:
    index: int  # position in the loader's input stream
    status: str  # mmcurate.ops.Status name: truncated, corrupt, unsupported, too_large, empty
    reason: str


@dataclass
class LoadedBatch:
    """pixels[j] is input sample indices[j]; the samples of this batch that failed are in rejected."""

    pixels: np.ndarray
    indices: np.ndarray
    rejected: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


class NativeImageLoader:
    """scaled_decode: let JPEG decoding downscale in the DCT domain to >= image_size (much faster on large
    photos; pixels then differ slightly from a full decode + resize, see tests/test_cpu_loader.py)."""

    def __init__(
        self,
        preprocess: Preprocess,
        batch_size: int = 256,
        num_threads: int | None = None,
        scaled_decode: bool = True,
        max_pixels: int | None = None,
        exif: bool = True,
        prefetch: bool = True,
    ):
        from mmcurate.ops.decode import DEFAULT_MAX_PIXELS

        check_loader_args(preprocess, batch_size, num_threads)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.scaled_decode = scaled_decode
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.exif = exif
        self.prefetch = prefetch

    def load(self, blobs, offset: int = 0) -> LoadedBatch:
        """Decode and resize one batch (any length); indices are offset + position in blobs."""
        from mmcurate.ops import Status, decode_images, resize_images

        s = self.preprocess.image_size
        res = decode_images(
            blobs,
            mode="RGB",
            device="cpu",
            target_size=s if self.scaled_decode else None,
            max_pixels=self.max_pixels,
            exif=self.exif,
            num_threads=self.num_threads,
        )
        ok = np.flatnonzero(res.ok)
        rejected = [
            Rejected(offset + int(i), Status(int(res.status[i])).name, res.errors[i] or "")
            for i in np.flatnonzero(~res.ok)
        ]
        if len(ok):
            pixels = resize_images(
                [res.images[i] for i in ok],
                size=s,
                interpolation=self.preprocess.interpolation,
                mode=self.preprocess.resize_mode,
                device="cpu",
                num_threads=self.num_threads,
            )
        else:
            pixels = np.empty((0, s, s, 3), dtype=np.uint8)
        return LoadedBatch(pixels, (ok + offset).astype(np.int64), rejected)

    def iter_batches(self, blobs: Iterable) -> Iterator[LoadedBatch]:
        """Batches of batch_size inputs (the last may be shorter), in order; with prefetch the next batch is
        prepared while the caller works on the current one."""
        return prefetched_batches(self.load, blobs, self.batch_size, self.prefetch, "mmcurate-loader")


def check_loader_args(preprocess, batch_size, num_threads) -> None:
    """The arguments every loader takes, checked the same way."""
    if not isinstance(preprocess, Preprocess):
        raise TypeError(f"preprocess must be a mmcurate.models.Preprocess, got {type(preprocess).__name__}")
    from mmcurate.pipeline.params import check_int, check_threads

    check_int("batch_size", batch_size, 1)
    # The stages' num_threads rule (null or 1..MAX_THREADS, the ops' range): True or 2000 used to pass here and
    # fail in the first load() instead.
    check_threads(num_threads)


def prefetched_batches(load, blobs: Iterable, batch_size: int, prefetch: bool, thread_name: str) -> Iterator:
    """``load(chunk, offset)`` over consecutive chunks of ``batch_size`` inputs, in order. With prefetch one
    background thread loads the next chunk while the caller uses the current one (the loaders release the
    GIL in native code, so the two overlap)."""
    it = iter(blobs)

    def chunks():
        offset = 0
        while True:
            chunk = list(itertools.islice(it, batch_size))
            if not chunk:
                return
            yield chunk, offset
            offset += len(chunk)

    if not prefetch:
        for chunk, offset in chunks():
            yield load(chunk, offset)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as pool:
        pending = None
        for chunk, offset in chunks():
            fut = pool.submit(load, chunk, offset)
            if pending is not None:
                yield pending.result()
            pending = fut
        if pending is not None:
            yield pending.result()
